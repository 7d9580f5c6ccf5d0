//! Conv2d (stride 1, odd square kernel, zero padding): its params and CPU reference, forward and backward.

use bytemuck::{Pod, Zeroable};

use super::{ACCUMULATE_INPUT, ACCUMULATE_PARAMS};
use crate::float::{Float, store};

/// 2-D convolution, stride 1, square odd kernel, zero padding `pad` on every side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Conv2dParams {
    pub n: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub k: u32,
    pub pad: u32,
    pub accumulate: u32,
    pub towers: u32,
    /// Images per partial sum in the first stage of the weight gradient (set by the launcher).
    pub chunk: u32,
    pub _pad: [u32; 2],
}

impl Conv2dParams {
    /// A `k`×`k` convolution that keeps the spatial size (`pad = k / 2`), as the model uses.
    pub fn same(n: usize, c_in: usize, h: usize, w: usize, c_out: usize, k: usize) -> Self {
        assert!(k % 2 == 1, "conv2d: kernel size {k} must be odd");
        Self {
            towers: 1,
            chunk: 1,
            _pad: [0; 2],
            n: n as u32,
            c_in: c_in as u32,
            h: h as u32,
            w: w as u32,
            c_out: c_out as u32,
            k: k as u32,
            pad: (k / 2) as u32,
            accumulate: 0,
        }
    }
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad + 1 - self.k) as usize
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad + 1 - self.k) as usize
    }
    pub fn x_len(&self) -> usize {
        (self.n * self.c_in * self.h * self.w) as usize
    }
    pub fn w_len(&self) -> usize {
        (self.c_out * self.c_in * self.k * self.k) as usize
    }
    pub fn y_len(&self) -> usize {
        self.n as usize * self.c_out as usize * self.out_h() * self.out_w()
    }
    /// The batch split into `towers` slices (see the module docs).
    pub fn with_towers(self, towers: usize) -> Self {
        assert!(
            towers > 0 && (self.n as usize).is_multiple_of(towers),
            "conv2d: batch {} does not split into {towers} towers",
            self.n
        );
        Self { towers: towers as u32, ..self }
    }
    /// Multiply-adds of the forward pass (the backward passes each cost about the same).
    pub fn macs(&self) -> usize {
        self.y_len() * (self.c_in * self.k * self.k) as usize
    }
}

/// y[n, co, oh, ow] = b[co] + Σ_{ci, kh, kw} w[co, ci, kh, kw] · x[n, ci, oh + kh − pad, ow + kw − pad]
pub fn conv2d_forward<F: Float>(
    p: &Conv2dParams,
    x: &[F],     // (N, Cin, H, W)
    w: &[F],     // (Cout, Cin, K, K)
    b: &[F],     // (Cout)
    y: &mut [F], // (N, Cout, OH, OW)
) {
    let (cin, h, wd, cout, k) = (p.c_in as usize, p.h as usize, p.w as usize, p.c_out as usize, p.k as usize);
    let (oh_n, ow_n) = (p.out_h(), p.out_w());
    for n in 0..p.n as usize {
        for co in 0..cout {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = b[co].to_f64();
                    for ci in 0..cin {
                        for kh in 0..k {
                            for kw in 0..k {
                                if let Some((ih, iw)) = input_at(p, oh, ow, kh, kw) {
                                    acc += w[((co * cin + ci) * k + kh) * k + kw].to_f64()
                                        * x[((n * cin + ci) * h + ih) * wd + iw].to_f64();
                                }
                            }
                        }
                    }
                    y[((n * cout + co) * oh_n + oh) * ow_n + ow] = F::from_f64(acc);
                }
            }
        }
    }
}

/// dx[n, ci, ih, iw] = Σ_{co, kh, kw} dy[n, co, ih − kh + pad, iw − kw + pad] · w[co, ci, kh, kw]
pub fn conv2d_backward_input<F: Float>(
    p: &Conv2dParams,
    dy: &[F],     // (N, Cout, OH, OW)
    w: &[F],      // (Cout, Cin, K, K)
    dx: &mut [F], // (N, Cin, H, W)
) {
    let (cin, h, wd, cout, k) = (p.c_in as usize, p.h as usize, p.w as usize, p.c_out as usize, p.k as usize);
    let (oh_n, ow_n) = (p.out_h(), p.out_w());
    let mut acc = vec![0.0f64; p.x_len()];
    for n in 0..p.n as usize {
        for co in 0..cout {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let g = dy[((n * cout + co) * oh_n + oh) * ow_n + ow].to_f64();
                    for ci in 0..cin {
                        for kh in 0..k {
                            for kw in 0..k {
                                if let Some((ih, iw)) = input_at(p, oh, ow, kh, kw) {
                                    acc[((n * cin + ci) * h + ih) * wd + iw] +=
                                        g * w[((co * cin + ci) * k + kh) * k + kw].to_f64();
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (d, a) in dx.iter_mut().zip(acc) {
        store(d, F::from_f64(a), p.accumulate & ACCUMULATE_INPUT != 0);
    }
}

/// dw[co, ci, kh, kw] = Σ_{n, oh, ow} dy[n, co, oh, ow] · x[n, ci, oh + kh − pad, ow + kw − pad];
/// db[co] = Σ_{n, oh, ow} dy[n, co, oh, ow]; each summed per tower, then the towers added.
pub fn conv2d_backward_weight<F: Float>(
    p: &Conv2dParams,
    x: &[F],      // (N, Cin, H, W)
    dy: &[F],     // (N, Cout, OH, OW)
    dw: &mut [F], // (Cout, Cin, K, K)
    db: &mut [F], // (Cout)
) {
    let (cin, h, wd, cout, k) = (p.c_in as usize, p.h as usize, p.w as usize, p.c_out as usize, p.k as usize);
    let (oh_n, ow_n) = (p.out_h(), p.out_w());
    let (mut total_w, mut total_b) = (vec![0.0f64; p.w_len()], vec![0.0f64; cout]);
    let tower_n = (p.n / p.towers) as usize;
    for tower in 0..p.towers as usize {
        let mut acc_w = vec![0.0f64; p.w_len()];
        let mut acc_b = vec![0.0f64; cout];
        for n in tower * tower_n..(tower + 1) * tower_n {
            for co in 0..cout {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let g = dy[((n * cout + co) * oh_n + oh) * ow_n + ow].to_f64();
                        acc_b[co] += g;
                        for ci in 0..cin {
                            for kh in 0..k {
                                for kw in 0..k {
                                    if let Some((ih, iw)) = input_at(p, oh, ow, kh, kw) {
                                        acc_w[((co * cin + ci) * k + kh) * k + kw] +=
                                            g * x[((n * cin + ci) * h + ih) * wd + iw].to_f64();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        total_w.iter_mut().zip(acc_w).for_each(|(t, a)| *t += a);
        total_b.iter_mut().zip(acc_b).for_each(|(t, a)| *t += a);
    }
    for (d, a) in dw.iter_mut().zip(total_w) {
        store(d, F::from_f64(a), p.accumulate & ACCUMULATE_PARAMS != 0);
    }
    for (d, a) in db.iter_mut().zip(total_b) {
        store(d, F::from_f64(a), p.accumulate & ACCUMULATE_PARAMS != 0);
    }
}

/// The input pixel that kernel tap (kh, kw) of output (oh, ow) reads, or None in the padding.
#[inline]
fn input_at(p: &Conv2dParams, oh: usize, ow: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
    let ih = (oh + kh).checked_sub(p.pad as usize)?;
    let iw = (ow + kw).checked_sub(p.pad as usize)?;
    (ih < p.h as usize && iw < p.w as usize).then_some((ih, iw))
}
