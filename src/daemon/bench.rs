//! `vigil bench --pipeline`: one camera's whole path, in this process, as the daemon runs it.
//!
//! A JPEG file is replayed as an MJPEG camera delivers frames: read and decoded anew for
//! every frame, the next one as soon as inference has taken the last (no fps cap, no frame
//! decoded in vain). Each frame then goes through the real pipeline (preprocess → model →
//! decode → filters → tracker → JSON) and the real publisher to the embedded broker, with
//! the camera's thread settings. Figures are taken between two moments after a warm-up:
//! frames/s, CPU seconds per frame (the whole process: source, workers, publisher, broker),
//! latency percentiles (capture to messages handed to the publisher) and memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{open_journal, DaemonError, Running};
use crate::config::{Config, Count};
use crate::model::Model;
use crate::source::{ReplaySettings, SourceSettings};

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    pub manifest: PathBuf,
    /// The manifest's model, loaded.
    pub model: Arc<Model>,
    /// The frame, as JPEG bytes.
    pub jpeg: Vec<u8>,
    pub threads: Count,
    pub in_flight: Count,
    pub warmup: u64,
    /// Frames timed, when the replay follows inference (`fps` is `None`).
    pub frames: u64,
    /// A camera delivering this many frames a second instead, timed for `seconds`.
    pub fps: Option<f64>,
    pub seconds: f64,
    /// Motion gating on, with its defaults.
    pub motion: bool,
    /// Collection on, saving a frame a second (every detection in its uncertain band, and a
    /// background sample each second, so an empty frame too), into the benchmark's scratch
    /// folder.
    pub collect: bool,
}

/// What it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineReport {
    /// Frames taken from the camera while timed, and of those the ones inferred.
    pub frames: u64,
    pub inferred: u64,
    pub seconds: f64,
    pub frames_per_s: f64,
    pub cpu_s_per_frame: f64,
    pub cpu_s_per_minute: f64,
    /// Per-frame latency samples, milliseconds (the last `frames`, at most 256): from the
    /// moment a worker took the frame to its messages handed to the publisher. (From
    /// capture it would also count the wait in the frame slot, here as long as the frame
    /// before took, since the replay decodes the next frame as soon as one is taken.)
    pub latency_ms: Vec<f64>,
    pub threads: usize,
    pub in_flight: usize,
    /// Resident memory at the end, and its peak, bytes.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Frames collection saved while timed, and those its full queue dropped.
    pub collected: u64,
    pub collect_dropped: u64,
}

/// Runs the benchmark in a runtime of its own.
pub fn pipeline(bench: &PipelineBench) -> Result<PipelineReport, DaemonError> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let io = |what: &str| {
        let what = what.to_string();
        move |error| DaemonError::Io { what, error }
    };
    std::fs::create_dir_all(&dir).map_err(io("creating the benchmark's folder"))?;
    let result = (|| {
        let frame = dir.join("frame.jpg");
        std::fs::write(&frame, &bench.jpeg).map_err(io("writing the benchmark's frame"))?;
        let config = bench_config(&dir, &frame, bench)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io("starting the runtime"))?;
        runtime.block_on(run(config, bench))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench_config(dir: &Path, frame: &Path, bench: &PipelineBench) -> Result<Config, DaemonError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|error| DaemonError::Io { what: "finding a free port".into(), error })?
        .port();
    let count = |c: Count| match c {
        Count::Auto => "\"auto\"".to_string(),
        Count::Fixed(n) => n.to_string(),
    };
    let text = format!(
        r#"
device_id = "bench"
log_level = "warn"
[broker]
enabled = true
listen = "127.0.0.1:{port}"
[mqtt]
spool_dir = {spool:?}
discovery = false
stats_interval_s = 3600
[cameras.bench]
model = {model:?}
fps = {fps}
threads = {threads}
in_flight = {in_flight}
source = {{ kind = "replay", path = {frame:?}, loop = true, fps = {fps} }}
{motion}
{collect}
"#,
        fps = bench.fps.unwrap_or(1000.0),
        motion = if bench.motion { "motion = {}" } else { "" },
        collect = if bench.collect {
            format!(
                "[cameras.bench.collect]\npath = {:?}\nuncertain = [0.05, 1.0]\nmin_interval_s = 1\nnear_duplicate = 0\n\
                 background_every_s = 1\nmax_per_label_per_hour = 100000\nmin_free_megabytes = 0",
                dir.join("collect")
            )
        } else {
            String::new()
        },
        spool = dir.join("spool"),
        model = std::path::absolute(&bench.manifest).unwrap_or_else(|_| bench.manifest.clone()),
        threads = count(bench.threads),
        in_flight = count(bench.in_flight),
    );
    let mut config = Config::from_toml(&text, dir, &[]).map_err(|problems| {
        DaemonError::Config(crate::config::ConfigError { path: "vigil bench --pipeline".into(), problems })
    })?;
    for camera in config.cameras.values_mut() {
        if let SourceSettings::Replay(replay) = &mut camera.source {
            *replay = ReplaySettings { follow_inference: bench.fps.is_none(), ..replay.clone() };
        }
    }
    Ok(config)
}

async fn run(config: Config, bench: &PipelineBench) -> Result<PipelineReport, DaemonError> {
    let broker = config.broker.clone().expect("the benchmark's configuration has a broker");
    let size = config.mqtt.max_packet_size;
    tokio::task::spawn_blocking(move || super::broker::start(&broker, size))
        .await
        .map_err(|e| DaemonError::Broker(format!("the embedded broker failed to start: {}", super::panic_text(e))))?
        .map_err(DaemonError::Broker)?;
    let models = config.cameras.keys().map(|c| (c.clone(), bench.model.clone())).collect();
    let (journal, sequence) = open_journal(&config.mqtt)?;
    let running = Running::start(&config, models, &journal, &sequence)?;
    let counters = running.pipelines[0].counters.clone();
    // Frames done: inferred, gated or failed (a frame taken is done once the reporter has it).
    let done = || {
        counters.inferred.load(Ordering::Relaxed)
            + counters.gated.load(Ordering::Relaxed)
            + counters.failed.load(Ordering::Relaxed)
    };
    let inferred = || counters.inferred.load(Ordering::Relaxed);
    let collect = running.pipelines[0].collect.clone();
    let saved = || collect.as_ref().map_or((0, 0), |c| (c.stats().collected, c.stats().dropped));

    // Waits until `n` frames are done; an error if the pipeline stops making progress.
    let wait_for = |n: u64| async move {
        let (mut last, mut since) = (done(), Instant::now());
        while done() < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if done() != last {
                (last, since) = (done(), Instant::now());
            } else if since.elapsed() > Duration::from_secs(60) {
                return Err(DaemonError::Internal(format!("the pipeline stopped at frame {last} of {n}")));
            }
        }
        Ok(())
    };
    let outcome = async {
        wait_for(bench.warmup.max(1)).await?;
        let (start, cpu0, n0, i0, s0) = (Instant::now(), cpu_seconds(), done(), inferred(), saved());
        match bench.fps {
            None => wait_for(n0 + bench.frames.max(1)).await?,
            Some(_) => tokio::time::sleep(Duration::from_secs_f64(bench.seconds.max(0.1))).await,
        }
        let (seconds, cpu1, n1, i1, s1) = (start.elapsed().as_secs_f64(), cpu_seconds(), done(), inferred(), saved());
        Ok::<_, DaemonError>((seconds, cpu1 - cpu0, n1 - n0, i1 - i0, (s1.0 - s0.0, s1.1 - s0.1)))
    }
    .await;
    let latency: Vec<f64> =
        counters.recent_processing_ms.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
    let plan = counters.plan;
    running.stop(Duration::from_secs(5)).await;
    let (seconds, cpu, frames, inferred, (collected, collect_dropped)) = outcome?;
    let keep = latency.len().min(inferred as usize);
    let (rss_bytes, peak_rss_bytes) = memory();
    Ok(PipelineReport {
        frames,
        inferred,
        seconds,
        frames_per_s: frames as f64 / seconds,
        cpu_s_per_frame: cpu / frames.max(1) as f64,
        cpu_s_per_minute: cpu / seconds * 60.0,
        latency_ms: latency[latency.len() - keep..].to_vec(),
        threads: plan.in_flight * plan.threads_per_frame,
        in_flight: plan.in_flight,
        rss_bytes,
        peak_rss_bytes,
        collected,
        collect_dropped,
    })
}

/// CPU seconds this process has used, user and system (Linux `/proc/self/stat`, in clock
/// ticks of `sysconf(_SC_CLK_TCK)`); NaN where it cannot be read.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = crate::files::read_text_capped(std::path::Path::new("/proc/self/stat"), 1 << 20) else {
        return f64::NAN;
    };
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return f64::NAN };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file are utime and stime; `rest` starts at field 3.
    match (fields.get(11).and_then(|f| f.parse::<u64>().ok()), fields.get(12).and_then(|f| f.parse::<u64>().ok())) {
        (Some(user), Some(system)) => {
            // SAFETY: sysconf only reads a configuration value.
            let ticks = unsafe { sys::sysconf(sys::SC_CLK_TCK) };
            if ticks > 0 {
                (user + system) as f64 / ticks as f64
            } else {
                f64::NAN
            }
        }
        _ => f64::NAN,
    }
}

/// Resident memory now and at its peak, bytes (`/proc/self/status`; 0 where unreadable).
pub fn memory() -> (u64, u64) {
    let status = crate::files::read_text_capped(std::path::Path::new("/proc/self/status"), 1 << 20).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The C library call the figures need (Linux; glibc and musl agree on it).
mod sys {
    /// `_SC_CLK_TCK` in Linux's `<unistd.h>`.
    pub const SC_CLK_TCK: std::ffi::c_int = 2;
    extern "C" {
        pub fn sysconf(name: std::ffi::c_int) -> std::ffi::c_long;
    }
}
