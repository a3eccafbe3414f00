//! Ctrl-C handling: the first interrupt asks the trainer to checkpoint and stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::error::{Error, Result};

/// Installs the Ctrl-C handler and returns its flag: the first Ctrl-C sets the flag (the
/// trainer saves a checkpoint and stops), a second one exits at once with status 130.
/// Later calls return the same flag.
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
    *guard = Some(flag.clone());
    Ok(flag)
}
