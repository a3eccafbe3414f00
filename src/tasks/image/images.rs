//! Decoding and preprocessing a listing once, up front: every image becomes `[3, n, n]`
//! bytes (after resize and crop); a file that does not decode is skipped and counted, with
//! samples naming the files.

use std::path::PathBuf;

use crate::runtime::error::{Error, Result};
use crate::tasks::image::data::Listing;
use crate::tasks::image::preprocess::Preprocessor;

/// How many skipped-file reasons are kept as samples.
pub const SKIPPED_SAMPLES: usize = 5;

/// Preprocessed images of one split.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// Side n of every image.
    pub size: u32,
    /// `[3, n, n]` bytes per image.
    pub bytes: Vec<Vec<u8>>,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// File per image.
    pub paths: Vec<PathBuf>,
    /// Files skipped (not decodable).
    pub skipped: usize,
    /// The first skipped files with the reason.
    pub samples: Vec<String>,
}

impl Images {
    /// Decodes the first `limit` images of `listing` (all when `None`) at side `n`.
    pub fn load(
        listing: &Listing,
        pre: &Preprocessor,
        n: u32,
        limit: Option<usize>,
    ) -> Result<Images> {
        let items = &listing.items[..limit.unwrap_or(usize::MAX).min(listing.items.len())];
        let decoded: Vec<std::result::Result<Vec<u8>, String>> = parallel_map(items, |it| {
            let run = || {
                let img = match (it.frame, &listing.idx) {
                    (Some(i), Some(idx)) => idx.image(i),
                    _ => image::open(&it.path).map_err(|e| e.to_string())?,
                };
                pre.pixels(&img, n)
            };
            // A decoder that panics on a hostile file skips that file like any other error.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|_| Err("the decoder failed on this file".into()))
        });
        let mut out = Images {
            size: n,
            ..Images::default()
        };
        for (it, d) in items.iter().zip(decoded) {
            match d {
                Ok(b) => {
                    out.bytes.push(b);
                    out.labels.push(it.label);
                    out.paths.push(it.path.clone());
                }
                Err(e) => {
                    out.skipped += 1;
                    if out.samples.len() < SKIPPED_SAMPLES {
                        out.samples.push(format!("{}: {e}", it.path.display()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Prints the skipped files (if any) and errors when nothing is left.
    pub fn report(&self, what: &str) -> Result<()> {
        if self.skipped > 0 {
            eprintln!(
                "{what}: {} image(s) skipped (e.g. {})",
                self.skipped,
                self.samples.join("; ")
            );
        }
        if self.bytes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{what}: no usable image ({} skipped)",
                self.skipped
            )));
        }
        Ok(())
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// `f` over `items` on the available cores, results in order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}
