//! Checks every producer of rows applies, so that line protocol and JSON writes obey the
//! row model alike: sorted unique tags, unique fields, no `time` column among them.

use std::fmt;

use storage::{FieldValue, TIME_COLUMN};

/// Above this many fields, duplicate keys are found by sorting instead of comparing
/// every pair, so a hostile line with 100,000 fields costs O(n log n), not O(n²).
const PAIRWISE_LIMIT: usize = 16;

/// How much of an offending value an error message quotes.
const MAX_SHOWN_CHARS: usize = 64;

pub(crate) fn reserved_time() -> String {
    format!("\"{TIME_COLUMN}\" is reserved and cannot be a tag or field name")
}

/// Sorts tags by key (the row model's invariant) and rejects duplicate keys.
pub(crate) fn sort_tags(tags: &mut [(String, String)]) -> Result<(), String> {
    // Clients usually send tags sorted (InfluxDB recommends it): check before sorting.
    if tags.is_sorted_by(|a, b| a.0 < b.0) {
        return Ok(());
    }
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    match tags.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(format!("duplicate tag key {}", Shown(&w[0].0))),
        None => Ok(()),
    }
}

/// Rejects duplicate field keys and fields named like a tag. `tags` is sorted.
pub(crate) fn check_field_keys(
    fields: &[(String, FieldValue)],
    tags: &[(String, String)],
) -> Result<(), String> {
    if fields.len() <= PAIRWISE_LIMIT {
        for (i, (key, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("duplicate field key {}", Shown(key)));
            }
        }
    } else {
        let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("duplicate field key {}", Shown(w[0])));
        }
    }
    for (key, _) in fields {
        // A few tags: names of another length need no comparison of their bytes.
        let clash = if tags.len() <= PAIRWISE_LIMIT {
            tags.iter().any(|(t, _)| t.len() == key.len() && t == key)
        } else {
            tags.binary_search_by(|(t, _)| t.as_str().cmp(key)).is_ok()
        };
        if clash {
            return Err(format!("tag and field both named {}", Shown(key)));
        }
    }
    Ok(())
}

/// Shows a client's value in an error message: quoted and escaped like a Rust string,
/// and shortened, so that a megabyte of garbage does not come back as a megabyte of error.
#[derive(Debug)]
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
        }
    }
}
