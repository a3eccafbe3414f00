//! Ctrl-C and SIGTERM handling: the first interrupt asks the trainer to checkpoint and
//! stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::error::{Error, Result};

/// Set by SIGTERM.
static TERMINATED: AtomicBool = AtomicBool::new(false);

/// Whether a SIGTERM arrived: the trainer stops as on the first Ctrl-C, and the command
/// then exits with status 143.
pub fn terminated() -> bool {
    TERMINATED.load(Ordering::SeqCst)
}

#[cfg(unix)]
extern "C" fn on_sigterm(_: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap and _exit.
    if TERMINATED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(143) };
    }
}

#[cfg(unix)]
fn install_sigterm() -> Result<()> {
    let handler = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls _exit.
    let previous = unsafe { libc::signal(libc::SIGTERM, handler) };
    if previous == libc::SIG_ERR {
        return Err(Error::InvalidArgument(
            "could not install the SIGTERM handler".into(),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn install_sigterm() -> Result<()> {
    Ok(())
}

/// Installs the Ctrl-C handler and returns its flag: the first Ctrl-C sets the flag (the
/// trainer saves a checkpoint and stops), a second one exits at once with status 130.
/// SIGTERM is handled like the first Ctrl-C (see [`terminated`]; a second one exits at
/// once with status 143). Later calls return the same flag.
pub fn install_interrupt_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);
    let mut guard = FLAG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(flag) = guard.as_ref() {
        return Ok(flag.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint and stopping (Ctrl-C again to quit now)");
    })
    .map_err(|e| Error::InvalidArgument(format!("could not install the Ctrl-C handler: {e}")))?;
    install_sigterm()?;
    *guard = Some(flag.clone());
    Ok(flag)
}
