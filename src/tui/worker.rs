//! Background analysis for the explorer: the selected matrix first (the latest selection wins),
//! then, unless paused, the rest in list order. Results and progress go to the UI's channel.

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
}

pub struct Scheduler {
    q: Mutex<Queue>,
    cv: Condvar,
    pub quit: AtomicBool,
}

enum Job {
    Analyze(usize),
    Heat(usize),
}

impl Scheduler {
    pub fn new(n: usize) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            q: Mutex::new(Queue {
                state: vec![0; n],
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
                        return Some(Job::Analyze(f));
                    }
                    2 if q.heat_wanted == Some(f) => {
                        q.heat_wanted = None;
                        return Some(Job::Heat(f));
                    }
                    _ => {}
                }
            }
            if !q.paused {
                if let Some(i) = q.state.iter().position(|s| *s == 0) {
                    q.state[i] = 1;
                    return Some(Job::Analyze(i));
                }
            }
            q = self.cv.wait(q).unwrap();
        }
    }

    fn finish(&self, row: usize) {
        self.q.lock().unwrap().state[row] = 2;
        self.cv.notify_all();
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
                    Job::Analyze(row) => {
                        let _ = tx.send(Event::Started(row));
                        let res = engine.analyze_with_decompositions(pairs[row]);
                        sched.finish(row);
                        if sched.quit.load(Ordering::Relaxed) {
                            return;
                        }
                        let report = match res {
                            Ok((report, base, tuned)) => {
                                if sched.heat_still_wanted(row) {
                                    let _ = tx.send(Event::Heat(heat_of(row, &base, &tuned)));
                                }
                                Ok(Arc::new(report))
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        let _ = tx.send(Event::Done(row, report));
                    }
                    Job::Heat(row) => {
                        // Decompositions come from the cache (or are recomputed without one).
                        if let Ok((base, tuned)) = engine.decompositions_of(pairs[row]) {
                            let _ = tx.send(Event::Heat(heat_of(row, &base, &tuned)));
                        }
                    }
                }
            }
        });
    }
}
