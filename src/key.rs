//! Content keys: 128-bit hashes built from length-prefixed parts. A leaf: checkpoints hash
//! their tensors with it, the cache files entries under it, flags find their file with it.

use xxhash_rust::xxh3::Xxh3;

/// A cache key: 128-bit hash of everything that determines an entry's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u128);

impl Key {
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

/// Builds keys from parts; each part is length-prefixed so concatenations cannot collide.
#[derive(Default)]
pub struct KeyBuilder(Xxh3);

impl KeyBuilder {
    pub fn new() -> Self {
        KeyBuilder(Xxh3::new())
    }
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    pub fn u128(self, x: u128) -> Self {
        self.bytes(&x.to_le_bytes())
    }
    pub fn f64(self, x: f64) -> Self {
        self.bytes(&x.to_le_bytes())
    }
    pub fn finish(self) -> Key {
        Key(self.0.digest128())
    }
}
