//! `vigil bench-source URL`: what a camera source costs on its own, with no model. The source
//! runs as the daemon runs it (its own thread, the newest-frame slot), and frames are taken
//! from the slot at `--fps` as a camera's inference takes them. After the first picture, it
//! reports for `--seconds`: pictures decoded, frames converted and taken, and the CPU the
//! whole process used per decoded picture. bench/compare_ffmpeg_rtsp.sh runs it beside
//! ffmpeg on the same stream.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::{BenchSourceArgs, CliError};
use crate::daemon::bench::cpu_seconds;
use crate::source::{SourceContext, Taken};

pub(super) fn run(args: BenchSourceArgs) -> Result<(), CliError> {
    let kind = if args.url.starts_with("rtsp://") { "rtsp" } else { "mjpeg" };
    let mut table = serde_json::json!({"kind": kind, "url": args.url});
    if kind == "rtsp" {
        table["transport"] = args.transport.clone().into();
    }
    let mut problems = Vec::new();
    let settings = crate::source::check(table, "source", Path::new("."), &mut problems);
    let settings = match settings {
        Some(settings) if problems.is_empty() => settings,
        _ => return Err(CliError::failure(anyhow!("{}", problems.join("\n")))),
    };
    let ctx = SourceContext::new("bench", args.fps);
    let thread = crate::source::spawn(&settings, ctx.clone()).map_err(CliError::failure)?;
    let interval = Duration::from_secs_f64(1.0 / args.fps);
    let began = Instant::now();
    // Until the first picture: the connection's set-up is not what is measured.
    let first = loop {
        match ctx.slot.take(Duration::from_millis(100)) {
            Taken::Frame(frame) => break Ok(frame),
            Taken::Closed => break Err(anyhow!("the source ended before its first picture")),
            Taken::Empty if began.elapsed() > Duration::from_secs(30) => {
                break Err(anyhow!("no picture in 30 s (the log says why)"))
            }
            Taken::Empty => {}
        }
    };
    let result = first.map(|frame| {
        let (decoded, cpu, start) = (ctx.status.decoded(), cpu_seconds(), Instant::now());
        let mut taken = 0u64;
        let mut next = start;
        while start.elapsed().as_secs_f64() < args.seconds {
            if let Taken::Frame(_) = ctx.slot.take(Duration::from_millis(100)) {
                taken += 1;
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let (decoded, cpu) = (ctx.status.decoded() - decoded, cpu_seconds() - cpu);
        serde_json::json!({
            "url": settings_shown(&settings),
            "width": frame.image.width(),
            "height": frame.image.height(),
            "seconds": seconds,
            "decoded": decoded,
            "taken": taken,
            "dropped": ctx.slot.dropped(),
            "cpu_s": cpu,
            "cpu_ms_per_decoded": if decoded > 0 { Some(cpu * 1e3 / decoded as f64) } else { None },
        })
    });
    ctx.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = thread.join();
    let report = result.map_err(CliError::failure)?;
    println!("{report}");
    Ok(())
}

/// The source's URL as the log shows it (the password masked).
fn settings_shown(settings: &crate::source::SourceSettings) -> String {
    match settings {
        crate::source::SourceSettings::Rtsp(r) => r.url.to_string(),
        crate::source::SourceSettings::Mjpeg(m) => m.url.to_string(),
        other => format!("{other:?}"),
    }
}
