//! The transform: CSV chunks turned into JSON records or group summaries by a
//! small spec language (documented in `docs/transform.md`).
//!
//! * [`spec`]: the spec as JSON, and the presets.
//! * [`program`]: a spec compiled against a header; one row's values.
//! * [`value`], [`dates`], [`expr`], [`filter`]: typed values, date formats,
//!   arithmetic, conditions.
//! * [`aggregate`]: group-by with exactly mergeable partial states.
//! * [`engine`]: runs a compiled spec over a chunk, answer piece by piece.
//! * [`range`]: which records of a byte range a worker owns.
//! * [`output`]: error records and counts.

pub mod aggregate;
pub mod dates;
pub mod engine;
pub mod expr;
pub mod filter;
pub mod output;
pub mod program;
pub mod range;
pub mod spec;
pub mod value;

#[cfg(test)]
mod tests;
