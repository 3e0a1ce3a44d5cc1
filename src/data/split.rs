//! Deterministic train/validation split by document, exact-duplicate removal and the
//! dataset's content hash.
//!
//! The split unit is the document: a whole text file (its windows overlap, so they must
//! stay on one side) or one conversation of a Q&A or chat file. A unit goes to
//! validation when the first 8 bytes of SHA-256(seed ‖ key), read as a little-endian
//! u64 and divided by 2^64, fall below the validation fraction: the same inputs and seed
//! give the same split on every machine and in the browser.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::examples::Example;

/// Which side of the split an example is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
}

/// The position of `key` in [0, 1) under `seed`.
pub fn unit_fraction(seed: u64, key: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The side of the split for the unit `key`.
pub fn split_of(seed: u64, key: &str, validation_fraction: f64) -> Split {
    if unit_fraction(seed, key) < validation_fraction {
        Split::Validation
    } else {
        Split::Train
    }
}

/// Remembers the examples seen (16 bytes each) to drop exact duplicates: same token ids
/// and same mask.
#[derive(Debug, Default)]
pub struct Dedupe {
    seen: HashSet<[u8; 16]>,
}

impl Dedupe {
    /// True the first time this example's content is seen.
    pub fn first_time(&mut self, ex: &Example) -> bool {
        self.first_time_digest(&example_digest(ex))
    }

    /// [`Dedupe::first_time`] for an example whose [`example_digest`] is known.
    pub fn first_time_digest(&mut self, digest: &[u8; 32]) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        self.seen.insert(key)
    }
}

/// SHA-256 of an example's token ids (little-endian u32), `0xFF`, and its loss mask:
/// what duplicate removal and the content hash compare.
pub fn example_digest(ex: &Example) -> [u8; 32] {
    let mut h = Sha256::new();
    // The ids as little-endian bytes in one update, not one 4-byte update per id.
    #[cfg(target_endian = "little")]
    h.update(bytemuck::cast_slice::<u32, u8>(&ex.input_ids));
    #[cfg(not(target_endian = "little"))]
    for id in &ex.input_ids {
        h.update(id.to_le_bytes());
    }
    h.update([0xFF]);
    h.update(&ex.loss_mask);
    h.finalize().into()
}

/// SHA-256 over every kept example in order (split, ids, mask): equal hashes mean the
/// model sees exactly the same data.
#[derive(Debug, Clone, Default)]
pub struct ContentHash {
    hasher: Sha256,
}

impl ContentHash {
    pub fn add(&mut self, split: Split, ex: &Example) {
        self.add_digest(split, ex.input_ids.len(), &example_digest(ex));
    }
    /// [`ContentHash::add`] for an example of `len` ids whose [`example_digest`] is known.
    pub fn add_digest(&mut self, split: Split, len: usize, digest: &[u8; 32]) {
        self.hasher.update([match split {
            Split::Train => 0u8,
            Split::Validation => 1u8,
        }]);
        self.hasher.update((len as u64).to_le_bytes());
        self.hasher.update(digest);
    }
    pub fn hex(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}
