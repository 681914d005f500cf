//! Background analysis for the explorer: the selected matrix first (the latest selection wins),
//! then, unless paused, the rest in list order. Results and progress go to the UI's channel,
//! stamped with the epoch they were computed in: a recomputation (a larger keep) starts a new
//! one, and the UI drops what arrives from an earlier one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};

use super::app::Heat;
use super::Event;
use crate::engine::Engine;
use crate::spectral;

#[derive(Default)]
struct Queue {
    /// 0 todo, 1 running, 2 done.
    state: Vec<u8>,
    /// The matrix the user is looking at: computed first, and its heatmap made.
    focus: Option<usize>,
    heat_wanted: Option<usize>,
    paused: bool,
    epoch: u64,
    /// Tuned vectors each job keeps (raised by a recomputation).
    keep: usize,
}

pub struct Scheduler {
    q: Mutex<Queue>,
    cv: Condvar,
    pub quit: AtomicBool,
}

/// A row's job, with the epoch it belongs to and how many tuned vectors it keeps.
enum Job {
    Analyze(usize, u64, usize),
    Heat(usize, u64, usize),
}

impl Scheduler {
    /// `n` rows, each keeping `keep` tuned vectors until a restart asks for more.
    pub fn new(n: usize, keep: usize) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            q: Mutex::new(Queue {
                state: vec![0; n],
                keep,
                ..Default::default()
            }),
            cv: Condvar::new(),
            quit: AtomicBool::new(false),
        })
    }

    pub fn focus(&self, row: usize) {
        let mut q = self.q.lock().unwrap();
        q.focus = Some(row);
        q.heat_wanted = Some(row);
        self.cv.notify_all();
    }

    pub fn set_paused(&self, paused: bool) {
        self.q.lock().unwrap().paused = paused;
        self.cv.notify_all();
    }

    pub fn paused(&self) -> bool {
        self.q.lock().unwrap().paused
    }

    /// The matrix computed first.
    pub fn focused(&self) -> Option<usize> {
        self.q.lock().unwrap().focus
    }

    /// Every matrix again with `keep` tuned vectors, as `epoch`. Jobs under way finish, and
    /// their results are dropped as stale.
    pub fn restart(&self, epoch: u64, keep: usize) {
        let mut q = self.q.lock().unwrap();
        q.epoch = epoch;
        q.keep = keep;
        q.state.iter_mut().for_each(|s| *s = 0);
        q.heat_wanted = q.focus;
        self.cv.notify_all();
    }

    pub fn stop(&self) {
        self.quit.store(true, Ordering::Relaxed);
        self.cv.notify_all();
    }

    fn next(&self) -> Option<Job> {
        let mut q = self.q.lock().unwrap();
        loop {
            if self.quit.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(f) = q.focus {
                match q.state[f] {
                    0 => {
                        q.state[f] = 1;
                        return Some(Job::Analyze(f, q.epoch, q.keep));
                    }
                    2 if q.heat_wanted == Some(f) => {
                        q.heat_wanted = None;
                        return Some(Job::Heat(f, q.epoch, q.keep));
                    }
                    _ => {}
                }
            }
            if !q.paused {
                if let Some(i) = q.state.iter().position(|s| *s == 0) {
                    q.state[i] = 1;
                    return Some(Job::Analyze(i, q.epoch, q.keep));
                }
            }
            q = self.cv.wait(q).unwrap();
        }
    }

    /// Marks `row` done; false (and the row left to do) when the job was from an earlier epoch.
    fn finish(&self, row: usize, epoch: u64) -> bool {
        let mut q = self.q.lock().unwrap();
        let current = q.epoch == epoch;
        if current {
            q.state[row] = 2;
        }
        self.cv.notify_all();
        current
    }

    fn heat_still_wanted(&self, row: usize) -> bool {
        let mut q = self.q.lock().unwrap();
        if q.focus == Some(row) && q.heat_wanted == Some(row) {
            q.heat_wanted = None;
            true
        } else {
            false
        }
    }
}

/// Heatmap data for the explorer: every base vector against the first 200 tuned ones.
pub fn heat_of(
    row: usize,
    base: &spectral::Decomposition,
    tuned: &spectral::Decomposition,
) -> Heat {
    let cols = super::app::HEAT_MAX.min(tuned.keep);
    Heat {
        row,
        rows: base.keep,
        cols,
        data: spectral::similarity(base, tuned, base.keep, cols),
    }
}

pub fn spawn(engine: Arc<Engine>, sched: Arc<Scheduler>, tx: Sender<Event>, workers: usize) {
    for _ in 0..workers.max(1) {
        let (engine, sched, tx) = (engine.clone(), sched.clone(), tx.clone());
        std::thread::spawn(move || {
            let pairs = engine.matrices();
            while let Some(job) = sched.next() {
                match job {
                    Job::Analyze(row, epoch, keep) => {
                        let _ = tx.send(Event::Started(epoch, row));
                        let res = engine.analyze_keeping(pairs[row], keep);
                        let current = sched.finish(row, epoch);
                        if sched.quit.load(Ordering::Relaxed) {
                            return;
                        }
                        if !current {
                            continue;
                        }
                        let report = match res {
                            Ok((report, base, tuned)) => {
                                if sched.heat_still_wanted(row) {
                                    let heat = Ok(heat_of(row, &base, &tuned));
                                    let _ = tx.send(Event::Heat(epoch, row, heat));
                                }
                                Ok(Arc::new(report))
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        let _ = tx.send(Event::Done(epoch, row, report));
                    }
                    Job::Heat(row, epoch, keep) => {
                        // Decompositions come from the cache (or are recomputed without one).
                        let heat = engine
                            .decompositions_keeping(pairs[row], keep)
                            .map(|(base, tuned)| heat_of(row, &base, &tuned))
                            .map_err(|e| e.to_string());
                        let _ = tx.send(Event::Heat(epoch, row, heat));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze_job(s: &Scheduler) -> (usize, u64) {
        match s.next() {
            Some(Job::Analyze(r, e, _)) => (r, e),
            _ => panic!("expected an analysis"),
        }
    }

    #[test]
    fn a_restart_requeues_every_row_and_drops_what_earlier_jobs_finish() {
        let s = Scheduler::new(2, 32);
        assert_eq!(analyze_job(&s), (0, 0));
        assert_eq!(analyze_job(&s), (1, 0));
        assert!(s.finish(0, 0));
        s.restart(1, 40);
        // Row 1's job started before the restart: its result is stale and the row stays to do.
        assert!(!s.finish(1, 0));
        assert!(matches!(s.next(), Some(Job::Analyze(0, 1, 40))));
        assert_eq!(analyze_job(&s), (1, 1));
        assert!(s.finish(0, 1) && s.finish(1, 1));
        assert_eq!(s.q.lock().unwrap().state, [2, 2]);
    }

    #[test]
    fn a_restart_makes_the_focused_heatmap_again() {
        let s = Scheduler::new(1, 32);
        s.focus(0);
        assert_eq!(analyze_job(&s), (0, 0));
        assert!(s.finish(0, 0));
        assert!(s.heat_still_wanted(0));
        s.restart(1, 40);
        assert_eq!(analyze_job(&s), (0, 1));
        assert!(s.finish(0, 1));
        assert!(matches!(s.next(), Some(Job::Heat(0, 1, 40))));
    }
}
