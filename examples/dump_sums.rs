// Scratch: the generated InputGradSums kernel.
use siamese::gpu::conv2d_rows::{Mode, Shape, Through, forward_source};
fn main() {
    let s = Shape { ic: 4, oc: 4, h: 28, w: 28, k: 3 };
    print!("{}", forward_source(s, Mode::InputGradSums, false, Through::BatchNormOfRelu));
}
