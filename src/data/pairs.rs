//! The tutorial's pairs: for each image, with probability ½ a uniformly random image of the
//! same class (possibly itself), target 0; otherwise one of another class, target 1.

use rand::RngExt;

/// Draws partners among a set of items by class.
pub struct PairSampler {
    /// Item positions of each class.
    by_class: Vec<Vec<u32>>,
}

/// One pair: the item, its partner, and the target (0 = same class, 1 = different).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    pub a: u32,
    pub b: u32,
    pub target: f32,
}

impl PairSampler {
    /// `labels[i]` is the class of item i (0–9).
    pub fn new(labels: &[u8]) -> Self {
        let mut by_class = vec![Vec::new(); 10];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l as usize].push(i as u32);
        }
        Self { by_class }
    }

    /// One pair for every item, in item order (the tutorial's DataLoader without shuffling).
    pub fn draw(&self, labels: &[u8], rng: &mut impl rand::Rng) -> Vec<Pair> {
        labels.iter().enumerate().map(|(i, &l)| self.pair(i as u32, l, rng)).collect()
    }

    fn pair(&self, a: u32, label: u8, rng: &mut impl rand::Rng) -> Pair {
        let same = &self.by_class[label as usize];
        if rng.random::<f64>() < 0.5 {
            return Pair { a, b: same[rng.random_range(0..same.len())], target: 0.0 };
        }
        // Uniform over every item of another class, without building that list.
        let others: usize = self.by_class.iter().map(Vec::len).sum::<usize>() - same.len();
        let mut k = rng.random_range(0..others);
        for (c, items) in self.by_class.iter().enumerate() {
            if c == label as usize {
                continue;
            }
            if k < items.len() {
                return Pair { a, b: items[k], target: 1.0 };
            }
            k -= items.len();
        }
        unreachable!("k < the number of items of other classes")
    }
}
