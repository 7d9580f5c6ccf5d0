//! The `siamese` command line: parses flags and calls the library; errors become one line on
//! stderr and exit code 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use siamese::gpu::{self, GpuContext};

#[derive(Parser)]
#[command(
    name = "siamese",
    version,
    about = "Train a Siamese CNN with the contrastive loss on Fashion-MNIST, on any GPU through WGSL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters, the one that would be used, and the limits that matter.
    Info,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn info() -> anyhow::Result<()> {
    let all = gpu::adapters();
    println!("adapters (best first):");
    if all.is_empty() {
        println!("  none");
    }
    for a in &all {
        let s = gpu::AdapterSummary::of(a);
        println!("  {}  driver: {}", s.describe(), s.driver);
    }
    let ctx = GpuContext::new()?;
    let a = &ctx.adapter;
    println!("chosen: {}", a.describe());
    println!("  max storage buffer binding: {} MiB", a.max_storage_binding >> 20);
    println!("  max workgroups per dimension: {}", a.max_workgroups_per_dim);
    println!("  timestamp queries: {}", if ctx.timestamps { "yes (per-kernel profiles)" } else { "no" });
    println!("  choose another with WGPU_BACKEND=vulkan|metal|dx12|gl and WGPU_ADAPTER_NAME=<part of its name>");
    Ok(())
}
