//! The real binary in a real terminal (tmux): it starts on the demo, responds to keys, quits
//! with exit code 0 and leaves the alternate screen.

use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is installed (.ci/run installs it)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// A detached 80×24 session `e2e` running `cmd`, on a tmux server of its own.
    fn start(tag: &str, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("lorascope-e2e-{tag}-{}", std::process::id()),
        };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            "80",
            "-y",
            "24",
            cmd,
        ]);
        t
    }
    fn alternate_on(&self) -> bool {
        self.run(&["display", "-p", "-t", "e2e", "#{alternate_on}"])
            .trim()
            == "1"
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "e2e"])
    }
    fn wait_for(&self, what: &str) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "timed out waiting for `{what}`; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn explorer_starts_responds_quits_and_restores_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    // As over SSH: 256 colours, no COLORTERM.
    let cmd = format!(
        "env -u COLORTERM TERM=xterm-256color NO_COLOR= XDG_STATE_HOME={0}/state {1} demo --cache-dir {0}; echo EXIT=$?; sleep 30",
        d.path().display(),
        env!("CARGO_BIN_EXE_lorascope"),
    );
    let tmux = Tmux::start("quit", &cmd);
    let s = tmux.wait_for("top vectors");
    assert!(s.contains("lorascope base → lora-r4  k=10 ε=0.50"), "{s}");
    // Wait for the background work to finish: the title shows the total and no progress.
    tmux.wait_for("intruders 30\n");
    assert!(tmux.alternate_on());
    // The heatmap is drawn in the palette's colours, not in greys.
    let colours = palette_colours(&tmux.run(&["capture-pane", "-p", "-e", "-t", "e2e"]));
    let hues: Vec<&u8> = colours
        .iter()
        .filter(|&&i| lorascope::tui::theme::RAMP_256.contains(&i))
        .collect();
    assert!(hues.len() >= 6, "heatmap colours {hues:?} of {colours:?}");
    assert!(colours.contains(&203), "no intruder red in {colours:?}");
    // Jump to the first matrix with intruders, move to its first intruder, raise ε, flag.
    tmux.run(&["send-keys", "-t", "e2e", "n"]);
    tmux.wait_for("L2 mlp.down_proj");
    tmux.run(&["send-keys", "-t", "e2e", "l", "l", "]"]);
    tmux.wait_for("ε=0.55");
    tmux.run(&["send-keys", "-t", "e2e", "f"]);
    tmux.wait_for("vector 2 of L2 mlp.down_proj: not an intruder");
    tmux.run(&["send-keys", "-t", "e2e", "q"]);
    let s = tmux.wait_for("EXIT=");
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(!tmux.alternate_on(), "alternate screen left");
    // The flag was saved for this (base, tuned) pair in the XDG state folder, not the cache,
    // with where the user was.
    let dir = d.path().join("state/lorascope/flags");
    let state: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert_eq!(state.len(), 1);
    let text = std::fs::read_to_string(state[0].as_ref().unwrap().path()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries: Vec<_> = v["matrices"].as_object().unwrap().values().collect();
    assert_eq!(entries.len(), 1, "{text}");
    assert_eq!(entries[0]["name"], "model.layers.2.mlp.down_proj.weight");
    assert_eq!(entries[0]["flags"]["2"], false);
    assert_eq!(v["view"]["matrix"], "model.layers.2.mlp.down_proj.weight");
    assert_eq!(v["view"]["vector"], 2);
}

/// The 256-colour palette entries (`38;5;N`, `48;5;N`) in a screen captured with its escapes.
fn palette_colours(screen: &str) -> std::collections::BTreeSet<u8> {
    let mut out = std::collections::BTreeSet::new();
    for seq in screen.split('\x1b').filter_map(|s| s.strip_prefix('[')) {
        let params: Vec<&str> = seq
            .split(|c: char| !(c.is_ascii_digit() || c == ';'))
            .next()
            .unwrap_or("")
            .split(';')
            .collect();
        for w in params.windows(3) {
            if (w[0] == "38" || w[0] == "48") && w[1] == "5" {
                if let Ok(i) = w[2].parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

#[test]
fn bad_input_fails_before_the_terminal_is_touched() {
    let o = Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(["/nonexistent/base", "/nonexistent/tuned"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: /nonexistent/base: "), "{err}");
    // Nothing was written to stdout: no alternate-screen or raw-mode escapes.
    assert!(o.stdout.is_empty());
}

#[test]
fn the_explorer_without_a_terminal_says_so_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let demo = lorascope::demo::ensure(d.path()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .arg(&demo.base)
        .arg(&demo.lora)
        .arg("--no-cache")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim_end(),
        "error: the explorer needs a terminal; use `lorascope scan` for text output"
    );
    assert!(
        o.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// The pid of the process whose command line contains `needle` (and is not a shell).
fn pid_of(needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<_> = cmd.split(|b| *b == 0).collect();
        let exe_is_us = args.first()?.ends_with(b"lorascope");
        let has = args
            .iter()
            .any(|a| a.windows(needle.len()).any(|w| w == needle.as_bytes()));
        (exe_is_us && has).then_some(pid)
    })
}

#[test]
fn a_termination_signal_restores_the_terminal_and_exits_128_plus_its_number() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().display().to_string();
    let cmd = format!(
        "TERM=xterm-256color XDG_STATE_HOME={cache}/state {} demo --cache-dir {cache}; echo EXIT=$?; stty -a; sleep 30",
        env!("CARGO_BIN_EXE_lorascope"),
    );
    let tmux = Tmux::start("signal", &cmd);
    tmux.wait_for("top vectors");
    let pid = pid_of(&cache).expect("the explorer's process");
    // SAFETY: signalling a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // 143 both from our orderly exit and from a default kill; the alternate screen and the
    // terminal modes below tell the two apart (a lost signal would exit 0).
    let s = tmux.wait_for("EXIT=");
    assert!(s.contains("EXIT=143"), "{s}");
    assert!(!tmux.alternate_on(), "alternate screen left");
    // Raw mode is off again: the line discipline echoes and edits lines.
    let s = tmux.wait_for("icanon");
    let words: Vec<&str> = s.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(words.contains(&mode), "{mode} off after exit:\n{s}");
    }
}
