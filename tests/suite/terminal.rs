//! The explorer in a real pseudo-terminal: whatever happens, the user gets their terminal back.
//! A panic on the explorer's thread restores it before the panic is printed; a panic in a
//! worker (a bug in one matrix's analysis) is contained: the explorer stays up, shows the
//! error on that row, and quits normally. The panics are planted by the debug build's hook.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ENTER_ALT: &str = "\x1b[?1049h";
const LEAVE_ALT: &str = "\x1b[?1049l";
const SHOW_CURSOR: &str = "\x1b[?25h";

struct Session {
    master: File,
    child: std::process::Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// `lorascope demo` (the explorer, stdout being a terminal) on an 80×24 pty of its own.
fn explore(panic_at: &str, cache: &std::path::Path) -> Session {
    explore_with(&["demo"], panic_at, cache)
}

/// `lorascope ARGS… --cache-dir CACHE` on an 80×24 pty of its own.
fn explore_with(args: &[&str], panic_at: &str, cache: &std::path::Path) -> Session {
    let (mut m, mut s) = (0, 0);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fresh descriptors, owned by the Files below.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty");
    let (master, slave) = unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) };
    let stdio = || Stdio::from(slave.try_clone().unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lorascope"));
    cmd.args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("TERM", "xterm-256color")
        .env("LORASCOPE_TEST_PANIC", panic_at)
        .env("XDG_STATE_HOME", cache.join("state"))
        .env("RUST_BACKTRACE", "0")
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio());
    // As a terminal emulator starts a shell: a session whose controlling terminal is the pty.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(cmd);
    drop(slave); // reads on the master end with EIO once the child's copies are closed
    let output = Arc::new(Mutex::new(Vec::new()));
    let (mut r, out) = (master.try_clone().unwrap(), output.clone());
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    Session {
        master,
        child,
        output,
        reader: Some(reader),
    }
}

impl Session {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
    fn wait_for_output(&self, what: &str) {
        self.wait_for_output_after(0, what)
    }
    fn wait_for_output_after(&self, from: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text()[from..].contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} after byte {from} in:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The reader has everything once the child's end of the pty is closed (EIO).
                self.reader.take().unwrap().join().unwrap();
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the explorer did not exit:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Whether the terminal is back in cooked mode (line editing and echo), as before the
    /// explorer put it in raw mode. On Linux a pty master reads its slave's settings.
    fn cooked(&self) -> bool {
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) },
            0
        );
        t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
    }
}

#[test]
fn a_panic_on_the_explorers_thread_restores_the_terminal_before_it_is_printed() {
    let cache = tempfile::tempdir().unwrap();
    let mut s = explore("ui", cache.path());
    s.wait_for_output(ENTER_ALT);
    assert_eq!(s.wait_exit(), 101, "{}", s.text());
    let out = s.text();
    let left = out.rfind(LEAVE_ALT).expect("left the alternate screen");
    assert!(left > out.find(ENTER_ALT).unwrap());
    let panic = out.find("panicked").expect("the panic is printed");
    assert!(panic > left, "printed on the alternate screen:\n{out}");
    assert!(s.cooked(), "raw mode left on");
}

#[test]
fn a_panic_in_a_worker_fails_its_matrix_and_the_explorer_carries_on() {
    let cache = tempfile::tempdir().unwrap();
    // The first row, selected at start: its detail shows the error.
    let mut s = explore("model.layers.0.mlp.down_proj.weight", cache.path());
    // ratatui moves the cursor between words: "failed: internal error …" is not one run.
    s.wait_for_output("internal");
    assert!(!s.cooked(), "the explorer is still running in raw mode");
    s.master.write_all(b"q").unwrap();
    assert_eq!(s.wait_exit(), 0, "{}", s.text());
    let out = s.text();
    assert!(out.rfind(LEAVE_ALT).unwrap() > out.find(ENTER_ALT).unwrap());
    assert!(
        !out.contains("panicked"),
        "a worker's panic drew over the screen:\n{out}"
    );
    assert!(s.cooked(), "raw mode left on");
}

#[test]
fn ctrl_z_gives_the_shell_its_cursor_back_and_the_screen_returns() {
    let cache = tempfile::tempdir().unwrap();
    let mut s = explore("", cache.path());
    // ratatui moves the cursor between words: wait for single words.
    s.wait_for_output("matrices");
    let before = s.text().len();
    s.master.write_all(b"\x1a").unwrap();
    // Suspending leaves the alternate screen and shows the cursor. This session leader has no
    // job control, so SIGTSTP does not stop it (an orphaned process group): it carries on as
    // after `fg`, back on the alternate screen with the whole screen drawn again.
    s.wait_for_output_after(before, SHOW_CURSOR);
    let out = s.text();
    let tail = &out[before..];
    let left = tail
        .find(LEAVE_ALT)
        .expect("left the alternate screen on C-z");
    let shown = tail.find(SHOW_CURSOR).unwrap();
    assert!(shown > left, "cursor shown before leaving the screen");
    s.wait_for_output_after(before + shown, ENTER_ALT);
    s.wait_for_output_after(before + shown, "matrices");
    s.master.write_all(b"q").unwrap();
    assert_eq!(s.wait_exit(), 0, "{}", s.text());
    let out = s.text();
    assert!(
        out.rfind(SHOW_CURSOR) > out.rfind(LEAVE_ALT),
        "cursor hidden after quit"
    );
    // The mouse was captured (the default), released on C-z, captured again, released on quit.
    let (on, off) = ("\x1b[?1000h", "\x1b[?1000l");
    assert_eq!(out.matches(on).count(), 2, "{out:?}");
    assert!(out.rfind(off) > out.rfind(on), "mouse left captured");
    assert!(
        out[before..].find(off) < out[before..].find(on),
        "C-z kept the mouse"
    );
    assert!(s.cooked(), "raw mode left on");
}

#[test]
fn several_runs_switch_and_compare_in_a_real_terminal() {
    let cache = tempfile::tempdir().unwrap();
    let demo = lorascope::demo::ensure(cache.path()).unwrap();
    let (base, lora, full) = (
        demo.base.to_str().unwrap(),
        demo.lora.to_str().unwrap(),
        demo.full.to_str().unwrap(),
    );
    let mut s = explore_with(
        &[base, lora, full, "--label", "adapter", "--label", "fullft"],
        "",
        cache.path(),
    );
    s.wait_for_output("adapter");
    s.wait_for_output("matrices");
    let before = s.text().len();
    // The second run shown (reversed in the run bar), then its matrix in every run.
    s.master.write_all(b"2").unwrap();
    s.wait_for_output_after(before, " 2 fullft ");
    let before = s.text().len();
    s.master.write_all(b"c").unwrap();
    s.wait_for_output_after(before, "every");
    s.wait_for_output_after(before, "closes");
    // The first q closes the view, the second quits.
    s.master.write_all(b"q").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.master.write_all(b"q").unwrap();
    assert_eq!(s.wait_exit(), 0, "{}", s.text());
    let out = s.text();
    assert!(out.rfind(LEAVE_ALT).unwrap() > out.find(ENTER_ALT).unwrap());
    assert!(s.cooked(), "raw mode left on");
}
