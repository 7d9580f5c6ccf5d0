//! What the command line shows and prints: progress on stderr (lines, an epoch's bar on a
//! terminal), and standard output written so that a closed or full one is an error, not a panic.

use std::io::IsTerminal;
use std::path::Path;

use siamese::error::Error;
use siamese::job::Progress;

/// Progress on stderr: lines, and within an epoch a bar with ETA where stderr is a terminal.
#[derive(Default)]
pub struct Terminal {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for Terminal {
    fn line(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(steps as u64);
        let style =
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} steps, ETA {eta} {msg}")
                .expect("a valid template")
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{}/{epochs}", epoch + 1));
        self.bar = Some(bar);
    }
    fn step(&mut self, step: usize, loss: &mut dyn FnMut() -> f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64 + 1);
            // Reading a loss waits for the GPU: only now and then.
            if step % 32 == 31 {
                bar.set_message(format!("loss {:.4}", loss()));
            }
        }
    }
    fn epoch_end(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Writes to standard output; a closed or full one is an error like any other (one line, exit
/// code 2), not a panic.
pub fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| Error::io("standard output", e))?;
    Ok(())
}

/// A path on its own line, byte for byte (a name that is not UTF-8 stays as it is on Unix).
pub fn out_path(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::ffi::OsStrExt;
        let mut stdout = std::io::stdout().lock();
        let bytes = [path.as_os_str().as_bytes(), b"\n"].concat();
        stdout.write_all(&bytes).and_then(|()| stdout.flush()).map_err(|e| Error::io("standard output", e))?;
        Ok(())
    }
    #[cfg(not(unix))]
    out(&format!("{}\n", path.display()))
}
