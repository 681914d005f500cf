//! Reads of mapped checkpoints that survive the file shrinking under them.
//!
//! A file truncated while mapped raises SIGBUS on the next read of a page past its new end,
//! which kills the process (and leaves the explorer's terminal on the alternate screen). Each
//! mapped checkpoint registers its range here; a SIGBUS inside a registered range maps a page
//! of zeros over the faulting one and marks the range faulted, so the read finishes on zeros
//! and the checked read path ([`Region::faulted`], tested after every read) turns it into an
//! error naming the file. No `sigsetjmp`: the interrupted code just continues. A SIGBUS
//! anywhere else goes to the handler that was there before (Rust's own, then the default).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Ranges mapped at once; a range past this is read unguarded (the old behaviour).
const SLOTS: usize = 1024;
/// `len` of a slot being filled: the handler skips it.
const FILLING: usize = usize::MAX;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicUsize = AtomicUsize::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const CLEAR: AtomicBool = AtomicBool::new(false);
static START: [AtomicUsize; SLOTS] = [ZERO; SLOTS];
static LEN: [AtomicUsize; SLOTS] = [ZERO; SLOTS];
static FAULTED: [AtomicBool; SLOTS] = [CLEAR; SLOTS];

/// A mapped range watched for SIGBUS until dropped (drop it before the range is unmapped).
#[derive(Debug)]
pub struct Region {
    slot: Option<usize>,
}

impl Region {
    /// Watch `len` bytes at `ptr`.
    pub fn watch(ptr: *const u8, len: usize) -> Region {
        if len == 0 || !install() {
            return Region { slot: None };
        }
        let slot = (0..SLOTS).find(|&i| {
            LEN[i]
                .compare_exchange(0, FILLING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(i) = slot {
            FAULTED[i].store(false, Ordering::Release);
            START[i].store(ptr as usize, Ordering::Release);
            LEN[i].store(len, Ordering::Release);
        }
        Region { slot }
    }

    /// Whether a read of the range hit a page past the file's end: what was read there was
    /// zeros, not the file. Sticky.
    pub fn faulted(&self) -> bool {
        self.slot
            .is_some_and(|i| FAULTED[i].load(Ordering::Acquire))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            LEN[i].store(0, Ordering::Release);
        }
    }
}

#[cfg(unix)]
mod imp {
    use super::*;
    use std::sync::OnceLock;

    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    static OLD: OnceLock<Option<libc::sigaction>> = OnceLock::new();

    /// The handler, installed once; false if it could not be.
    pub fn install() -> bool {
        OLD.get_or_init(|| {
            // SAFETY: plain libc calls on zeroed, then filled, structs.
            unsafe {
                let page = libc::sysconf(libc::_SC_PAGESIZE);
                if page > 0 {
                    PAGE.store(page as usize, Ordering::Relaxed);
                }
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigbus as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                (libc::sigaction(libc::SIGBUS, &new, &mut old) == 0).then_some(old)
            }
        })
        .is_some()
    }

    extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; only atomics,
        // mmap and sigaction are used here.
        unsafe {
            let addr = (*info).si_addr() as usize;
            for i in 0..SLOTS {
                let len = LEN[i].load(Ordering::Acquire);
                if len == 0 || len == FILLING {
                    continue;
                }
                let start = START[i].load(Ordering::Acquire);
                if addr >= start && addr - start < len {
                    let page = PAGE.load(Ordering::Relaxed);
                    let at = addr & !(page - 1);
                    let p = libc::mmap(
                        at as *mut libc::c_void,
                        page,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                    if p != libc::MAP_FAILED {
                        FAULTED[i].store(true, Ordering::Release);
                        return;
                    }
                }
            }
            // Not ours: the previous handler gets the fault when the instruction runs again.
            if let Some(Some(old)) = OLD.get() {
                libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(unix)]
use imp::install;

#[cfg(not(unix))]
fn install() -> bool {
    false
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_a_truncated_end_gives_zeros_and_a_fault_not_a_signal() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let page = 4096 * 4;
        std::fs::File::create(&p)
            .unwrap()
            .write_all(&vec![7u8; page * 4])
            .unwrap();
        let f = std::fs::File::open(&p).unwrap();
        // SAFETY: the test truncates the file on purpose; that is what the guard is for.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let region = Region::watch(map.as_ptr(), map.len());
        assert_eq!(map[page * 3], 7);
        assert!(!region.faulted());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(page as u64)
            .unwrap();
        let sum: u64 = map.iter().map(|&b| b as u64).sum();
        assert!(region.faulted());
        // The first `page` bytes are still the file's; the rest read as zeros.
        assert_eq!(sum, 7 * page as u64);
        drop(region);
        drop(map);
    }
}
