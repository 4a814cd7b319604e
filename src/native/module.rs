//! One filter configuration of the native module (`Module`: the parsed config, its metric
//! families, the shared tick), and the module thread that drives its main-thread events.

use super::abi::{self, ConfigEnvoy};
use super::stats::{self, Families, NativeStats, Target};
use super::{entropy, log, now_unix_ms, NativeHost};
use crate::config::{self, Config};
use crate::host::SplitMix64;
use crate::session::{self, Ticker};
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex};

/// A pointer Envoy owns, carried to the timer thread (the scheduler's commit is documented
/// as safe from any thread).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut c_void);
// SAFETY: only `scheduler_commit` is called through it off the main thread, which abi.h
// documents as thread-safe; the thread is joined before the scheduler is deleted.
unsafe impl Send for SendPtr {}

impl SendPtr {
    /// Ask for one `on_http_filter_config_scheduled` on the main thread (a method, so the
    /// timer thread's closure owns the whole `SendPtr`, not its raw field).
    fn commit(self) {
        // SAFETY: a scheduler from `scheduler_new`, alive until the timer thread is joined
        // (`Timer::drop`); commit is documented as callable from any thread.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, 0)
        };
    }
}

/// The module thread that asks Envoy's main thread for an event every `FLUSH_INTERVAL`: the
/// stats' flush each time, the gateway's tick every `EVENTS_PER_TICK`th.
pub(super) struct Timer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    scheduler: SendPtr,
}

impl Timer {
    pub(super) fn start(config_envoy: ConfigEnvoy) -> Option<Timer> {
        // SAFETY: the config pointer Envoy handed `on_http_filter_config_new`.
        let scheduler = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy)
        };
        if scheduler.is_null() {
            return None;
        }
        let scheduler = SendPtr(scheduler);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop_seen = stop.clone();
        let thread = std::thread::Builder::new()
            .name("llm-gateway-tick".into())
            .spawn(move || {
                let (lock, wake) = &*stop_seen;
                let mut stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                loop {
                    let (guard, _) = wake
                        .wait_timeout(stopped, stats::FLUSH_INTERVAL)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    scheduler.commit();
                }
            })
            .ok()?;
        Some(Timer {
            stop,
            thread: Some(thread),
            scheduler,
        })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // SAFETY: created by `scheduler_new`, no thread uses it any more.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler.0)
        };
    }
}

/// One filter configuration: what `on_http_filter_config_new` returns (as an `Arc`) and every
/// stream of it shares, across workers.
pub(super) struct Module {
    pub(super) config: Config,
    pub(super) families: Families,
    pub(super) config_envoy: SendPtr,
    seeds: Mutex<SplitMix64>,
    pub(super) ticker: Mutex<Ticker>,
    pub(super) timer: Mutex<Option<Timer>>,
    /// The timer's events so far (the tick runs on every `EVENTS_PER_TICK`th).
    pub(super) events: std::sync::atomic::AtomicU64,
}

/// The gateway's tick is once a second; the timer's events come every `FLUSH_INTERVAL`.
pub(super) const EVENTS_PER_TICK: u64 = 5;

// SAFETY: `config_envoy` is only used on Envoy's main thread (config hooks and the config
// scheduler's event run there); everything else is Sync on its own.
unsafe impl Sync for Module {}
// SAFETY: as above; the module is created and destroyed on the main thread.
unsafe impl Send for Module {}

impl Module {
    pub(super) fn seed(&self) -> u64 {
        self.seeds
            .lock()
            .map(|mut s| s.next_u64())
            .unwrap_or_else(|_| entropy())
    }
}

pub(super) fn configure(config_envoy: ConfigEnvoy, bytes: &[u8]) -> Option<Module> {
    let now_ms = now_unix_ms();
    // `os.environ/NAME`: the config's own `environment_variables` first (the core's rule),
    // then Envoy's process environment — the module has no VM environment of its own.
    let (config, diagnostics) =
        config::check(bytes, &|name| std::env::var(name).ok(), now_ms / 1000);
    for w in &diagnostics.warnings {
        log(session::LogLevel::Warn, &format!("config: {w}"));
    }
    for e in &diagnostics.errors {
        log(
            session::LogLevel::Error,
            &format!("invalid configuration: {e}"),
        );
    }
    let config = config?;
    let (families, refused) = Families::define(config_envoy);
    for name in refused {
        log(
            session::LogLevel::Error,
            &format!("metric not defined: {name}"),
        );
    }
    let mut seeds = SplitMix64::new(entropy() ^ now_ms);
    let mut host = NativeHost::new(seeds.next_u64());
    crate::router::precreate(&config, &mut host);
    let ticker = {
        let mut stats = NativeStats {
            families: &families,
            config: &config,
            target: Target::Config(config_envoy),
        };
        Ticker::new(&config, &mut stats)
    };
    log(
        session::LogLevel::Info,
        &format!(
            "configured {} model groups, {} deployments (native module)",
            config.groups.len(),
            config.deployments.len()
        ),
    );
    Some(Module {
        config,
        families,
        config_envoy: SendPtr(config_envoy),
        seeds: Mutex::new(seeds),
        ticker: Mutex::new(ticker),
        timer: Mutex::new(None),
        events: std::sync::atomic::AtomicU64::new(0),
    })
}
