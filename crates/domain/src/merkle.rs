//! The Merkle log maths (DESIGN.md §3): RFC 6962 / RFC 9162 leaf and node hashing, the hashes a
//! log must store, tree heads, and inclusion and consistency proofs.
//!
//! The tree algorithms come from `tlog_tiles` (Cloudflare's port of Go's
//! `golang.org/x/mod/sumdb/tlog`, the reference used by the Go checksum database). Its storage
//! model fits a database: appending record `n` yields a handful of "stored hashes" at consecutive
//! indexes, and every tree head or proof is computed from a small, known set of stored hashes.
//! Because those index sets depend only on sizes, never on hash values, this module first asks
//! which indexes a computation needs (so the store can fetch them in one query) and then runs it
//! over the fetched hashes; `tlog_tiles`' reader trait is synchronous and could not await a
//! database itself.

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};
pub use tlog_tiles::{HASH_SIZE, Hash, stored_hash_count, stored_hash_index};
use tlog_tiles::{HashReader, check_record, check_tree, prove_record, prove_tree, sub_tree_index};

use crate::event::Timestamp;
use crate::{Error, Result};

/// Domain separator that starts every leaf.
pub const LEAF_PREFIX: &[u8] = b"accord.leaf.v1";

/// What a leaf commits to (DESIGN.md §3): the event's place in the log, when it was recorded,
/// its stream position, the key and signature, and the SHA-256 of the exact body bytes.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'a> {
    /// Global position (= leaf index).
    pub position: u64,
    /// Server recording time.
    pub recorded_at: Timestamp,
    /// Stream id.
    pub stream: &'a str,
    /// Version within the stream.
    pub stream_version: u64,
    /// Signing key id.
    pub key_id: &'a str,
    /// Signature bytes.
    pub signature: &'a [u8],
    /// SHA-256 of the body.
    pub body_sha256: [u8; 32],
}

impl Leaf<'_> {
    /// The canonical leaf bytes (documented in ledger.proto, `RecordedEvent`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            LEAF_PREFIX.len()
                + 8
                + 8
                + 4
                + self.stream.len()
                + 8
                + 4
                + self.key_id.len()
                + 4
                + self.signature.len()
                + 32,
        );
        out.extend_from_slice(LEAF_PREFIX);
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.recorded_at.micros().to_be_bytes());
        put_bytes(&mut out, self.stream.as_bytes());
        out.extend_from_slice(&self.stream_version.to_be_bytes());
        put_bytes(&mut out, self.key_id.as_bytes());
        put_bytes(&mut out, self.signature);
        out.extend_from_slice(&self.body_sha256);
        out
    }

    /// The leaf hash `SHA-256(0x00 || leaf)`.
    pub fn hash(&self) -> Hash {
        tlog_tiles::record_hash(&self.to_bytes())
    }
}

/// Domain separator that starts every access-log leaf. It differs from [`LEAF_PREFIX`] within the
/// first bytes, so an access leaf can never be read as an event leaf or the reverse.
pub const ACCESS_LEAF_PREFIX: &[u8] = b"accord.access-leaf.v1";

/// What an access-log leaf commits to: the record's place in the access log, when the call was
/// answered, and the SHA-256 of the exact encoded access record (which carries everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLeaf {
    /// Position in the access log (= leaf index).
    pub position: u64,
    /// When the call was answered.
    pub at: Timestamp,
    /// SHA-256 of the encoded access record.
    pub record_sha256: [u8; 32],
}

impl AccessLeaf {
    /// The canonical leaf bytes: `ACCESS_LEAF_PREFIX || position (u64 BE) || at µs (i64 BE) ||
    /// record_sha256`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ACCESS_LEAF_PREFIX.len() + 8 + 8 + 32);
        out.extend_from_slice(ACCESS_LEAF_PREFIX);
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.at.micros().to_be_bytes());
        out.extend_from_slice(&self.record_sha256);
        out
    }

    /// The leaf hash `SHA-256(0x00 || leaf)`, as for event leaves.
    pub fn hash(&self) -> Hash {
        tlog_tiles::record_hash(&self.to_bytes())
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Parses a 32-byte hash, naming `field` in the error.
pub fn parse_hash(field: &str, bytes: &[u8]) -> Result<Hash> {
    let arr: [u8; 32] =
        bytes.try_into().map_err(|_| Error::invalid(field, format!("must be 32 bytes, found {}", bytes.len())))?;
    Ok(Hash(arr))
}

/// Records which stored-hash indexes a computation reads, answering with placeholders.
struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash([0; 32]); indexes.len()])
    }
}

/// Answers reads from fetched hashes.
struct Fetched<'a>(&'a HashMap<u64, Hash>);

impl HashReader for Fetched<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes.iter().map(|i| self.0.get(i).copied().ok_or(tlog_tiles::Error::IndexesNotInTree)).collect()
    }
}

fn recorded(f: impl FnOnce(&Recorder) -> Result<(), tlog_tiles::Error>) -> Vec<u64> {
    let r = Recorder(RefCell::new(Vec::new()));
    // A size error surfaces again, with its message, when the caller runs the real computation.
    let _ = f(&r);
    let mut v = r.0.into_inner();
    v.sort_unstable();
    v.dedup();
    v
}

fn missing(e: tlog_tiles::Error) -> Error {
    Error::Proof(format!("stored hashes incomplete: {e}"))
}

/// The stored-hash indexes that the tree head of size `n` is computed from (at most 1 + log₂ n).
/// These are also exactly the hashes needed to append the next record (the tree's right edge).
pub fn tree_hash_indexes(n: u64) -> Vec<u64> {
    if n == 0 { Vec::new() } else { sub_tree_index(0, n, Vec::new()) }
}

/// The tree head of size `n` from fetched stored hashes.
pub fn tree_hash(n: u64, hashes: &HashMap<u64, Hash>) -> Result<Hash> {
    tlog_tiles::tree_hash(n, &Fetched(hashes)).map_err(missing)
}

fn check_sizes_inclusion(t: u64, n: u64) -> Result<()> {
    if n >= t {
        return Err(Error::invalid("position", format!("must be less than tree size {t}, found {n}")));
    }
    Ok(())
}

fn check_sizes_consistency(t: u64, n: u64) -> Result<()> {
    if n == 0 || n > t {
        return Err(Error::invalid("from_size", format!("must be 1 to {t}, found {n}")));
    }
    Ok(())
}

/// The stored-hash indexes an inclusion proof of record `n` in the tree of size `t` needs.
pub fn inclusion_indexes(t: u64, n: u64) -> Result<Vec<u64>> {
    check_sizes_inclusion(t, n)?;
    Ok(recorded(|r| prove_record(t, n, r).map(drop)))
}

/// The inclusion proof (audit path) of record `n` in the tree of size `t`.
pub fn inclusion_proof(t: u64, n: u64, hashes: &HashMap<u64, Hash>) -> Result<Vec<Hash>> {
    check_sizes_inclusion(t, n)?;
    prove_record(t, n, &Fetched(hashes)).map_err(missing)
}

/// The stored-hash indexes a consistency proof from size `n` to size `t` needs.
pub fn consistency_indexes(t: u64, n: u64) -> Result<Vec<u64>> {
    check_sizes_consistency(t, n)?;
    Ok(recorded(|r| prove_tree(t, n, r).map(drop)))
}

/// The consistency proof that the tree of size `t` extends the tree of size `n`.
pub fn consistency_proof(t: u64, n: u64, hashes: &HashMap<u64, Hash>) -> Result<Vec<Hash>> {
    check_sizes_consistency(t, n)?;
    prove_tree(t, n, &Fetched(hashes)).map_err(missing)
}

/// Checks that `leaf` is record `n` of the tree of size `t` with head `root`.
pub fn verify_inclusion(proof: &[Hash], t: u64, root: Hash, n: u64, leaf: Hash) -> Result<()> {
    check_sizes_inclusion(t, n)?;
    check_record(&proof.to_vec(), t, root, n, leaf)
        .map_err(|_| Error::Proof(format!("leaf {n} is not proven in the tree of size {t} with that root")))
}

/// Checks that the tree of size `t` with head `root_t` extends the tree of size `n` with head
/// `root_n`.
pub fn verify_consistency(proof: &[Hash], t: u64, root_t: Hash, n: u64, root_n: Hash) -> Result<()> {
    check_sizes_consistency(t, n)?;
    check_tree(&proof.to_vec(), t, root_t, n, root_n)
        .map_err(|_| Error::Proof(format!("the tree of size {t} is not proven to extend the tree of size {n}")))
}

/// The right edge of a tree: what appending needs. Holds the tree size and the stored hashes at
/// [`tree_hash_indexes`] of that size.
#[derive(Debug, Clone)]
pub struct Frontier {
    size: u64,
    hashes: HashMap<u64, Hash>,
}

/// The stored hashes produced by appending one record, to be stored from index `first`.
#[derive(Debug, Clone)]
pub struct StoredHashes {
    /// `stored_hash_index(0, position)`.
    pub first: u64,
    /// The hashes, in index order (the leaf hash first).
    pub hashes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn empty() -> Self {
        Self { size: 0, hashes: HashMap::new() }
    }

    /// A tree of `size` from the stored hashes at `tree_hash_indexes(size)`.
    pub fn from_hashes(size: u64, hashes: HashMap<u64, Hash>) -> Result<Self> {
        for i in tree_hash_indexes(size) {
            if !hashes.contains_key(&i) {
                return Err(Error::Proof(format!("frontier of size {size} lacks stored hash {i}")));
            }
        }
        Ok(Self { size, hashes })
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree head.
    pub fn root(&self) -> Hash {
        tree_hash(self.size, &self.hashes).expect("a frontier holds its tree's right edge")
    }

    /// Appends a record by its leaf hash; returns the hashes to store.
    pub fn push(&mut self, leaf: Hash) -> StoredHashes {
        let n = self.size;
        let hashes = tlog_tiles::stored_hashes_for_record_hash(n, leaf, &Fetched(&self.hashes))
            .expect("a frontier holds the hashes appending reads");
        let first = stored_hash_index(0, n);
        for (k, h) in hashes.iter().enumerate() {
            self.hashes.insert(first + k as u64, *h);
        }
        self.size = n + 1;
        let keep = tree_hash_indexes(self.size);
        self.hashes.retain(|i, _| keep.binary_search(i).is_ok());
        StoredHashes { first, hashes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 test leaves, as used by Certificate Transparency's reference implementations.
    fn rfc_leaves() -> Vec<Vec<u8>> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|h| hex::decode(h).unwrap())
            .collect()
    }

    /// The expected tree heads of the first k leaves (k = 1..8), from the same test suites.
    const RFC_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// Builds a log in memory the way the store does: every stored hash kept by index.
    fn build(leaves: &[Vec<u8>]) -> (HashMap<u64, Hash>, Vec<Hash>) {
        let mut all = HashMap::new();
        let mut f = Frontier::empty();
        let mut roots = Vec::new();
        for l in leaves {
            let s = f.push(tlog_tiles::record_hash(l));
            for (k, h) in s.hashes.iter().enumerate() {
                all.insert(s.first + k as u64, *h);
            }
            roots.push(f.root());
        }
        (all, roots)
    }

    fn fetch(all: &HashMap<u64, Hash>, idx: &[u64]) -> HashMap<u64, Hash> {
        idx.iter().map(|i| (*i, all[i])).collect()
    }

    #[test]
    fn tree_heads_match_the_rfc6962_test_vectors() {
        let (all, roots) = build(&rfc_leaves());
        for (k, want) in RFC_ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(roots[k].0), *want, "root of size {}", k + 1);
            let n = k as u64 + 1;
            assert_eq!(tree_hash(n, &fetch(&all, &tree_hash_indexes(n))).unwrap(), roots[k]);
        }
    }

    #[test]
    fn proofs_agree_with_an_independent_implementation() {
        use ct_merkle::mem_backed_tree::MemoryBackedTree;
        use sha2_011::Sha256;
        // ct-merkle hashes leaves as SHA-256(0x00 || bytes) too, so raw leaf bytes line up.
        let leaves: Vec<Vec<u8>> = (0..70u32).map(|i| format!("leaf {i}").into_bytes()).collect();
        let (all, roots) = build(&leaves);
        let mut other: MemoryBackedTree<Sha256, Vec<u8>> = MemoryBackedTree::new();
        for (i, l) in leaves.iter().enumerate() {
            other.push(l.clone());
            let t = i as u64 + 1;
            let their_root = other.root();
            assert_eq!(their_root.as_bytes().as_slice(), roots[i].0.as_slice(), "root of size {t}");
            for n in 0..t {
                let proof = inclusion_proof(t, n, &fetch(&all, &inclusion_indexes(t, n).unwrap())).unwrap();
                let theirs = other.prove_inclusion(n as usize);
                let flat: Vec<u8> = proof.iter().flat_map(|h| h.0).collect();
                assert_eq!(flat, theirs.as_bytes(), "inclusion {n} in {t}");
                verify_inclusion(&proof, t, roots[i], n, tlog_tiles::record_hash(&leaves[n as usize])).unwrap();
            }
            for n in 1..=t {
                let proof = consistency_proof(t, n, &fetch(&all, &consistency_indexes(t, n).unwrap())).unwrap();
                let theirs = other.prove_consistency((t - n) as usize);
                let flat: Vec<u8> = proof.iter().flat_map(|h| h.0).collect();
                assert_eq!(flat, theirs.as_bytes(), "consistency {n} -> {t}");
                verify_consistency(&proof, t, roots[i], n, roots[n as usize - 1]).unwrap();
            }
        }
    }

    #[test]
    fn proofs_fail_on_any_wrong_input() {
        let leaves = rfc_leaves();
        let (all, roots) = build(&leaves);
        let proof = inclusion_proof(8, 3, &fetch(&all, &inclusion_indexes(8, 3).unwrap())).unwrap();
        let leaf3 = tlog_tiles::record_hash(&leaves[3]);
        verify_inclusion(&proof, 8, roots[7], 3, leaf3).unwrap();
        assert!(verify_inclusion(&proof, 8, roots[7], 4, leaf3).is_err());
        assert!(verify_inclusion(&proof, 8, roots[6], 3, leaf3).is_err());
        assert!(verify_inclusion(&proof, 8, roots[7], 3, tlog_tiles::record_hash(b"x")).is_err());
        let mut bad = proof.clone();
        bad[0].0[0] ^= 1;
        assert!(verify_inclusion(&bad, 8, roots[7], 3, leaf3).is_err());
        let c = consistency_proof(8, 5, &fetch(&all, &consistency_indexes(8, 5).unwrap())).unwrap();
        verify_consistency(&c, 8, roots[7], 5, roots[4]).unwrap();
        assert!(verify_consistency(&c, 8, roots[7], 5, roots[3]).is_err());
        assert!(inclusion_indexes(3, 3).is_err());
        assert!(consistency_indexes(3, 0).is_err());
        assert!(consistency_indexes(3, 4).is_err());
    }

    #[test]
    fn access_leaves_are_stable_and_never_event_leaves() {
        let a = AccessLeaf { position: 7, at: Timestamp(1_700_000_000_000_001), record_sha256: [3; 32] };
        let bytes = a.to_bytes();
        assert!(bytes.starts_with(ACCESS_LEAF_PREFIX));
        assert!(!bytes.starts_with(LEAF_PREFIX));
        assert_eq!(bytes.len(), ACCESS_LEAF_PREFIX.len() + 48);
        assert_eq!(a.hash(), tlog_tiles::record_hash(&bytes));
        // Fixed vector: changing the encoding changes every stored access-log hash.
        assert_eq!(hex::encode(a.hash().0), ACCESS_LEAF_VECTOR);
        let event = Leaf {
            position: 7,
            recorded_at: Timestamp(1_700_000_000_000_001),
            stream: "",
            stream_version: 0,
            key_id: "",
            signature: &[],
            body_sha256: [3; 32],
        };
        assert_ne!(a.hash(), event.hash());
        for v in [
            AccessLeaf { position: 8, ..a },
            AccessLeaf { at: Timestamp(1_700_000_000_000_002), ..a },
            AccessLeaf { record_sha256: [4; 32], ..a },
        ] {
            assert_ne!(v.hash(), a.hash(), "{v:?}");
        }
    }

    const ACCESS_LEAF_VECTOR: &str = "144c2a2f57f1b9d20b62a5ac9011e512b7c29c9ea226376bd71959c2770c526c";

    #[test]
    fn leaf_bytes_commit_to_every_field() {
        let base = Leaf {
            position: 7,
            recorded_at: Timestamp(1_700_000_000_000_001),
            stream: "nominal-1",
            stream_version: 2,
            key_id: "k1",
            signature: &[9; 64],
            body_sha256: [3; 32],
        };
        let h = base.hash();
        let variants = [
            Leaf { position: 8, ..base },
            Leaf { recorded_at: Timestamp(1_700_000_000_000_002), ..base },
            Leaf { stream: "nominal-2", ..base },
            Leaf { stream_version: 3, ..base },
            Leaf { key_id: "k2", ..base },
            Leaf { signature: &[8; 64], ..base },
            Leaf { body_sha256: [4; 32], ..base },
            // Length prefixes keep field boundaries unambiguous.
            Leaf { stream: "nominal-1k", key_id: "1", ..base },
        ];
        for v in variants {
            assert_ne!(v.hash(), h, "{v:?}");
        }
    }
}
