//! [`Keyspace`]: a whole sled tree (a real agent's), or one virtual agent's share of a
//! tree that the simulator's agents all use, under a key prefix.
//!
//! Why not a tree per virtual agent: sled 0.34 keeps every tree's name and root in one
//! meta page and writes the whole page again whenever a tree is created, and a page that
//! large goes to its own blob file. With four trees per agent, 10,000 simulated agents
//! wrote about 12 GB of blobs during their ramp (quadratic in the number of trees) and
//! filled the disk of the scale benchmark.

use sled::IVec;

/// Keys of one owner in a tree: all of it, or those under a prefix, which every method
/// adds on the way in and strips on the way out.
#[derive(Debug, Clone)]
pub struct Keyspace {
    tree: sled::Tree,
    prefix: Vec<u8>,
}

impl Keyspace {
    /// All of `tree`.
    pub fn whole(tree: sled::Tree) -> Keyspace {
        Keyspace {
            tree,
            prefix: Vec::new(),
        }
    }

    /// The keys of `owner` in `tree`. Owners are separated by a NUL after the name, so no
    /// owner's keys can start with another's prefix ("-1" and "-12" stay apart).
    pub fn shared(tree: sled::Tree, owner: &str) -> Keyspace {
        assert!(!owner.contains('\0'), "an owner name has no NUL");
        let mut prefix = owner.as_bytes().to_vec();
        prefix.push(0);
        Keyspace { tree, prefix }
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn strip(&self, (k, v): (IVec, IVec)) -> (IVec, IVec) {
        if self.prefix.is_empty() {
            (k, v)
        } else {
            (IVec::from(&k[self.prefix.len()..]), v)
        }
    }

    pub fn get(&self, key: &[u8]) -> sled::Result<Option<IVec>> {
        self.tree.get(self.key(key))
    }

    pub fn contains_key(&self, key: &[u8]) -> sled::Result<bool> {
        self.tree.contains_key(self.key(key))
    }

    pub fn insert(&self, key: &[u8], value: impl Into<IVec>) -> sled::Result<Option<IVec>> {
        self.tree.insert(self.key(key), value)
    }

    pub fn remove(&self, key: &[u8]) -> sled::Result<Option<IVec>> {
        self.tree.remove(self.key(key))
    }

    pub fn update_and_fetch<V: Into<IVec>>(
        &self,
        key: &[u8],
        f: impl FnMut(Option<&[u8]>) -> Option<V>,
    ) -> sled::Result<Option<IVec>> {
        self.tree.update_and_fetch(self.key(key), f)
    }

    /// Flushes the whole database the tree belongs to (sled has no finer flush).
    pub fn flush(&self) -> sled::Result<usize> {
        self.tree.flush()
    }

    /// Every entry, in key order, keys without the prefix.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = sled::Result<(IVec, IVec)>> + '_ {
        self.tree
            .scan_prefix(&self.prefix)
            .map(move |item| item.map(|kv| self.strip(kv)))
    }

    /// The entries from `start` (inclusive) on, in key order, keys without the prefix.
    pub fn range_from(
        &self,
        start: &[u8],
    ) -> impl DoubleEndedIterator<Item = sled::Result<(IVec, IVec)>> + '_ {
        let end = prefix_end(&self.prefix);
        let start = self.key(start);
        let range = match end {
            Some(end) => self.tree.range(start..end),
            None => self.tree.range(start..),
        };
        range.map(move |item| item.map(|kv| self.strip(kv)))
    }

    /// Entries held; like sled's own `len`, this walks them.
    pub fn len(&self) -> usize {
        if self.prefix.is_empty() {
            self.tree.len()
        } else {
            self.tree.scan_prefix(&self.prefix).count()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix(&self.prefix).next().is_none()
    }
}

/// The first key after every key that starts with `prefix`; `None` when there is none
/// (an empty prefix, or one of only 0xFF bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    fn keys(space: &Keyspace) -> Vec<Vec<u8>> {
        space.iter().map(|kv| kv.unwrap().0.to_vec()).collect()
    }

    #[test]
    fn owners_of_a_shared_tree_see_only_their_own_keys() {
        let db = db();
        let tree = db.open_tree("queue").unwrap();
        let one = Keyspace::shared(tree.clone(), "-1");
        let twelve = Keyspace::shared(tree.clone(), "-12");
        for k in [[0u8, 1], [2, 0], [0xFF, 0xFF]] {
            one.insert(&k, &b"one"[..]).unwrap();
        }
        twelve.insert(&[0, 1], &b"twelve"[..]).unwrap();
        twelve.insert(&[0, 0], &b"twelve"[..]).unwrap();

        assert_eq!(keys(&one), vec![vec![0, 1], vec![2, 0], vec![0xFF, 0xFF]]);
        assert_eq!(keys(&twelve), vec![vec![0, 0], vec![0, 1]]);
        assert_eq!((one.len(), twelve.len()), (3, 2));
        assert_eq!(one.get(&[0, 1]).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(twelve.get(&[0, 1]).unwrap().unwrap(), &b"twelve"[..]);
        assert!(!twelve.contains_key(&[2, 0]).unwrap());
        let from: Vec<_> = one
            .range_from(&[1])
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        assert_eq!(from, vec![vec![2, 0], vec![0xFF, 0xFF]]);
        assert_eq!(twelve.range_from(&[1]).count(), 0);

        one.remove(&[0, 1]).unwrap();
        assert_eq!(twelve.len(), 2);
        twelve.remove(&[0, 0]).unwrap();
        twelve.remove(&[0, 1]).unwrap();
        assert!(twelve.is_empty());
        assert!(!one.is_empty());
        // Still one tree, however many owners.
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn a_whole_tree_keeps_its_keys_as_they_are() {
        let db = db();
        let tree = db.open_tree("queue").unwrap();
        let space = Keyspace::whole(tree.clone());
        space.insert(&[7], &b"v"[..]).unwrap();
        space.update_and_fetch(&[8], |_| Some(vec![1u8])).unwrap();
        assert_eq!(tree.get([7]).unwrap().unwrap(), &b"v"[..]);
        assert_eq!(keys(&space), vec![vec![7], vec![8]]);
        assert_eq!(space.range_from(&[8]).count(), 1);
        assert_eq!(space.len(), 2);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[1, 0]), Some(vec![1, 1]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
