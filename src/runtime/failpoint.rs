//! Fail points: a test hook that makes the process fail at a named point of a file
//! protocol, to check that a crash or a full disk there loses nothing.
//!
//! `CAPABOOST_FAILPOINT=NAME[@N]` arms the point `NAME` at its `N`th hit (default 1) in this
//! process. Points named `...-enospc` make the write they guard fail as a full disk does
//! (`ErrorKind::StorageFull`, after half the bytes are written); every other point ends
//! the process on the spot, with exit code [`EXIT_CODE`] and no cleanup, as `kill -9`
//! would. Unset (the normal case) every check is one relaxed atomic load.
//!
//! The points: in the checkpoint writer `checkpoint-files-written` (the temp folder holds
//! every file but `trainer_state.json`), `checkpoint-old-renamed` (no `checkpoint/` at
//! all), `checkpoint-swapped` (the new one in place, the old one not yet deleted) and
//! `checkpoint-enospc` (the optimizer file's write); in `finetune --overwrite`
//! `overwrite-prepared`, `overwrite-old-renamed` and `overwrite-swapped`.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that arms a fail point.
pub const ENV: &str = "CAPABOOST_FAILPOINT";

/// Exit code of a process ended by a fail point.
pub const EXIT_CODE: i32 = 86;

fn armed() -> Option<&'static (String, u32)> {
    static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            let (name, n) = match v.split_once('@') {
                Some((name, n)) => (name, n.parse().unwrap_or(1)),
                None => (v.as_str(), 1),
            };
            (!name.is_empty()).then(|| (name.to_string(), n.max(1)))
        })
        .as_ref()
}

/// Whether the armed point is `name` and this is its hit that fires.
pub fn fires(name: &str) -> bool {
    static HITS: AtomicU32 = AtomicU32::new(0);
    match armed() {
        Some((armed, n)) if armed == name => HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}

/// Ends the process at point `name` when it fires (see the module docs).
pub fn exit_at(name: &str) {
    if fires(name) {
        eprintln!("{ENV}: ending the process at {name}");
        std::process::exit(EXIT_CODE);
    }
}

/// Writes `bytes` to `w`; when point `name` fires, only half of them, then a full disk's
/// error.
pub fn write_all(name: &str, w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    if fires(name) {
        w.write_all(&bytes[..bytes.len() / 2])?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("No space left on device ({ENV}={name})"),
        ));
    }
    w.write_all(bytes)
}
