//! Named indices: create, look up, drop and recreate indices by name while other threads
//! use them.
//!
//! The registry holds an `Arc<Index>` per name. Dropping a name only removes the registry's
//! `Arc`: whoever holds one keeps a working index until they let it go, and a later create
//! under the same name starts a fresh, empty index. So there is never a half-dropped index to
//! recover from (the seed's operator fix, "DELETE the index and let the next record recreate
//! it", is never needed).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::VectorError;
use crate::index::Index;
use crate::params::IndexParams;

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

const NAME_RULE: &str = "1 to 128 characters from A-Z a-z 0-9 _ - . , not starting with '.'";

/// Indices by name. `Send + Sync`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Registry {
    indices: RwLock<HashMap<String, Arc<Index>>>,
}

/// Checks a registry name: 1 to 128 ASCII letters, digits, `_`, `-` or `.`, not starting
/// with `.` (so a name is also a safe file name).
pub fn validate_name(name: &str) -> Result<(), VectorError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(VectorError::InvalidName {
            name: name.to_string(),
            expected: NAME_RULE.to_string(),
        })
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Creates an index under `name`. Errors: an invalid name, invalid parameters,
    /// [`VectorError::IndexExists`] if the name is taken.
    pub fn create(&self, name: &str, params: IndexParams) -> Result<Arc<Index>, VectorError> {
        validate_name(name)?;
        let index = Arc::new(Index::new(params)?);
        let mut indices = self.indices.write().unwrap_or_else(PoisonError::into_inner);
        if indices.contains_key(name) {
            return Err(VectorError::IndexExists {
                name: name.to_string(),
            });
        }
        indices.insert(name.to_string(), Arc::clone(&index));
        Ok(index)
    }

    /// The index under `name`, created with `params` if there is none. An existing index is
    /// returned as it is, even if its parameters differ from `params` (a vector of the wrong
    /// dimension is then refused by its `add`).
    pub fn get_or_create(
        &self,
        name: &str,
        params: IndexParams,
    ) -> Result<Arc<Index>, VectorError> {
        validate_name(name)?;
        if let Some(index) = self
            .indices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(Arc::clone(index));
        }
        // Validate (and build the empty index) before taking the write lock.
        let fresh = Index::new(params)?;
        let mut indices = self.indices.write().unwrap_or_else(PoisonError::into_inner);
        let index = indices
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(fresh));
        Ok(Arc::clone(index))
    }

    /// The index under `name`, or [`VectorError::IndexNotFound`].
    pub fn get(&self, name: &str) -> Result<Arc<Index>, VectorError> {
        self.indices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| VectorError::IndexNotFound {
                name: name.to_string(),
            })
    }

    /// Removes `name` from the registry; true if it was there. Holders of its `Arc` keep a
    /// working index.
    pub fn drop_index(&self, name: &str) -> bool {
        let removed = self
            .indices
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        // The index itself (if this was its last Arc) is freed here, outside the lock.
        removed.is_some()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .indices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}
