//! The V4L2 camera source: its settings, the choice of capture mode ([`negotiate`], a plain
//! function tested without a device), and the capture itself through nokhwa (cargo feature
//! `camera`), reopened by [`super::supervise`] when it fails. The capture has been checked
//! only where a camera exists: see docs/config.md, "What has been checked on hardware".

use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use super::{Backoff, SourceContext};

/// `kind = "v4l2"`: a camera device.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Settings {
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: PixelFormat,
}

/// The keys of a v4l2 source, as written.
#[derive(Debug, Default, Deserialize)]
struct RawV4l2 {
    device: Option<PathBuf>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    format: Option<String>,
}

/// Checks a v4l2 source's keys (all but `kind`); `key` is the table's path.
pub(super) fn check(value: Value, key: &str, problems: &mut Vec<String>) -> Option<V4l2Settings> {
    if !cfg!(feature = "camera") {
        problems.push(format!("{key}.kind: this vigil was built without the `camera` feature (V4L2 cameras)"));
    }
    let raw: RawV4l2 = crate::settings::section_as(value, key, problems, "not a key of a v4l2 source")?;
    let device = raw.device.unwrap_or_else(|| PathBuf::from("/dev/video0"));
    if !device.exists() {
        problems.push(format!(
            "{key}.device: camera device {} does not exist (is the camera plugged in? `ls /dev/video*`)",
            device.display()
        ));
    }
    let format = match raw.format.as_deref().unwrap_or("any").parse::<PixelFormat>() {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("{key}.format: {e}"));
            PixelFormat::Any
        }
    };
    let fps = raw.fps.unwrap_or(15.0);
    if fps.fract() != 0.0 || !(1.0..=240.0).contains(&fps) {
        problems.push(format!("{key}.fps: {fps} must be a whole number of frames per second, 1 to 240"));
    }
    Some(V4l2Settings {
        device,
        width: raw.width.unwrap_or(1280),
        height: raw.height.unwrap_or(720),
        fps: fps as u32,
        format,
    })
}

/// A capture pixel format; `Any` lets vigil choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Any,
    Mjpeg,
    Yuyv,
    Nv12,
    Rgb,
    Bgr,
}

impl FromStr for PixelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "any" => PixelFormat::Any,
            "mjpeg" | "mjpg" => PixelFormat::Mjpeg,
            "yuyv" => PixelFormat::Yuyv,
            "nv12" => PixelFormat::Nv12,
            "rgb" => PixelFormat::Rgb,
            "bgr" => PixelFormat::Bgr,
            "gray" | "grey" => return Err("grey-scale capture is not supported (vigil's models take colour)".into()),
            _ => return Err(format!("\"{s}\" is not one of any, mjpeg, yuyv, nv12, rgb, bgr")),
        })
    }
}

impl PixelFormat {
    /// When the user does not choose: compressed first (less USB bandwidth), then YUYV.
    fn preference(self) -> u8 {
        match self {
            PixelFormat::Mjpeg => 0,
            PixelFormat::Yuyv => 1,
            PixelFormat::Nv12 => 2,
            PixelFormat::Rgb => 3,
            PixelFormat::Bgr => 4,
            PixelFormat::Any => 5,
        }
    }
}

/// One capture mode a camera offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}x{} @ {} fps", self.format, self.width, self.height, self.fps)
    }
}

/// Picks the offered mode closest to what was asked: the asked format if one was named
/// (refused if the camera lacks it), then the resolution nearest in pixel count, then the
/// lowest frame rate at or above the asked one (else the highest below), then the format
/// preference (MJPEG, YUYV, NV12, RGB, BGR). `offered` holds only modes vigil can decode
/// (grey-scale modes are left out before this).
pub fn negotiate(offered: &[Mode], want: &V4l2Settings) -> Result<Mode, String> {
    let candidates: Vec<&Mode> =
        offered.iter().filter(|m| want.format == PixelFormat::Any || m.format == want.format).collect();
    if candidates.is_empty() {
        let list: Vec<String> = offered.iter().map(|m| m.to_string()).collect();
        return Err(if offered.is_empty() {
            "the camera offers no capture modes".into()
        } else {
            format!("the camera has no {:?} mode; it offers: {}", want.format, list.join(", "))
        });
    }
    let asked_pixels = want.width as i64 * want.height as i64;
    let fps_rank = |fps: u32| if fps >= want.fps { (0, fps - want.fps) } else { (1, want.fps - fps) };
    let best = candidates
        .into_iter()
        .min_by_key(|m| {
            let pixels = (m.width as i64 * m.height as i64 - asked_pixels).abs();
            (pixels, fps_rank(m.fps), m.format.preference())
        })
        .expect("candidates is not empty");
    Ok(*best)
}

/// Opens the camera and streams frames into the context's slot, reopening it whenever it
/// fails or disappears, until told to stop.
pub(super) fn run(settings: &V4l2Settings, ctx: &SourceContext) {
    let what = format!("device={}", settings.device.display());
    super::supervise(ctx, &what, &mut Backoff::reconnect(), || device::Capture::open(settings));
}

#[cfg(feature = "camera")]
mod device {
    //! nokhwa's V4L2 backend.
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};

    use super::{negotiate, Mode, PixelFormat, V4l2Settings};
    use crate::source::{Connection, SourceContext};

    pub(super) struct Capture {
        camera: nokhwa::Camera,
        pub(super) mode: Mode,
    }

    /// The modes nokhwa's RGB decoder can turn into colour frames (not grey-scale).
    fn to_mode(f: &CameraFormat) -> Option<Mode> {
        if !<RgbFormat as nokhwa::FormatDecoder>::FORMATS.contains(&f.format()) {
            return None;
        }
        let format = match f.format() {
            FrameFormat::MJPEG => PixelFormat::Mjpeg,
            FrameFormat::YUYV => PixelFormat::Yuyv,
            FrameFormat::NV12 => PixelFormat::Nv12,
            FrameFormat::RAWRGB => PixelFormat::Rgb,
            FrameFormat::RAWBGR => PixelFormat::Bgr,
            FrameFormat::GRAY => return None,
        };
        Some(Mode { format, width: f.width(), height: f.height(), fps: f.frame_rate() })
    }

    fn to_frame_format(f: PixelFormat) -> FrameFormat {
        match f {
            PixelFormat::Mjpeg | PixelFormat::Any => FrameFormat::MJPEG,
            PixelFormat::Yuyv => FrameFormat::YUYV,
            PixelFormat::Nv12 => FrameFormat::NV12,
            PixelFormat::Rgb => FrameFormat::RAWRGB,
            PixelFormat::Bgr => FrameFormat::RAWBGR,
        }
    }

    /// `/dev/videoN` → index N (nokhwa's V4L2 backend opens cameras by index).
    fn index(settings: &V4l2Settings) -> Result<CameraIndex, String> {
        let real =
            std::fs::canonicalize(&settings.device).map_err(|e| format!("{}: {e}", settings.device.display()))?;
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.strip_prefix("video")
            .and_then(|n| n.parse::<u32>().ok())
            .map(CameraIndex::Index)
            .ok_or_else(|| format!("{} is not a /dev/videoN device", real.display()))
    }

    impl Capture {
        pub(super) fn open(settings: &V4l2Settings) -> Result<Capture, String> {
            let index = index(settings)?;
            let any = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
            let mut camera = nokhwa::Camera::new(index, any).map_err(|e| e.to_string())?;
            let offered: Vec<Mode> =
                camera.compatible_camera_formats().map_err(|e| e.to_string())?.iter().filter_map(to_mode).collect();
            let mode = negotiate(&offered, settings)?;
            let exact =
                CameraFormat::new(Resolution::new(mode.width, mode.height), to_frame_format(mode.format), mode.fps);
            camera
                .set_camera_requset(RequestedFormat::new::<RgbFormat>(RequestedFormatType::Exact(exact)))
                .map_err(|e| format!("setting {mode}: {e}"))?;
            camera.open_stream().map_err(|e| e.to_string())?;
            Ok(Capture { camera, mode })
        }
    }

    impl Connection for Capture {
        const NOUN: &'static str = "camera";

        fn describe(&self) -> String {
            format!("mode=\"{}\"", self.mode)
        }

        fn frame(&mut self, _: &SourceContext) -> Result<image::RgbImage, String> {
            let buffer = self.camera.frame().map_err(|e| e.to_string())?;
            buffer.decode_image::<RgbFormat>().map_err(|e| format!("decoding a {} frame: {e}", self.mode))
        }
    }
}

#[cfg(not(feature = "camera"))]
mod device {
    //! A build without the `camera` feature: the config check refuses v4l2 sources, so
    //! this is reached only if that check is bypassed.
    use super::V4l2Settings;
    use crate::source::{Connection, SourceContext};

    /// Never made: [`Capture::open`] always refuses.
    pub(super) enum Capture {}

    impl Capture {
        pub(super) fn open(_: &V4l2Settings) -> Result<Capture, String> {
            Err("this vigil was built without the `camera` feature (nokhwa)".into())
        }
    }

    impl Connection for Capture {
        const NOUN: &'static str = "camera";

        fn describe(&self) -> String {
            match *self {}
        }

        fn frame(&mut self, _: &SourceContext) -> Result<image::RgbImage, String> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;

    fn want(format: PixelFormat, width: u32, height: u32, fps: u32) -> V4l2Settings {
        V4l2Settings { device: "/dev/video0".into(), width, height, fps, format }
    }

    fn m(format: PixelFormat, width: u32, height: u32, fps: u32) -> Mode {
        Mode { format, width, height, fps }
    }

    /// The modes of a common UVC webcam (Logitech C920-like).
    fn webcam() -> Vec<Mode> {
        use PixelFormat::*;
        vec![
            m(Yuyv, 640, 480, 30),
            m(Yuyv, 1280, 720, 10),
            m(Yuyv, 1920, 1080, 5),
            m(Mjpeg, 640, 480, 30),
            m(Mjpeg, 1280, 720, 30),
            m(Mjpeg, 1280, 720, 15),
            m(Mjpeg, 1920, 1080, 30),
        ]
    }

    #[test]
    fn negotiation_prefers_resolution_then_fps_then_mjpeg() {
        let got = negotiate(&webcam(), &want(PixelFormat::Any, 1280, 720, 15)).unwrap();
        assert_eq!(got, m(PixelFormat::Mjpeg, 1280, 720, 15));
        let got = negotiate(&webcam(), &want(PixelFormat::Any, 1280, 720, 20)).unwrap();
        assert_eq!(got, m(PixelFormat::Mjpeg, 1280, 720, 30), "the lowest rate at or above the asked one");
        let got = negotiate(&webcam(), &want(PixelFormat::Yuyv, 1280, 720, 30)).unwrap();
        assert_eq!(got, m(PixelFormat::Yuyv, 1280, 720, 10), "the highest rate below when none reaches it");
        let got = negotiate(&webcam(), &want(PixelFormat::Any, 800, 600, 30)).unwrap();
        assert_eq!(got, m(PixelFormat::Mjpeg, 640, 480, 30), "nearest pixel count, MJPEG over YUYV");
    }

    #[test]
    fn negotiation_refuses_a_missing_format_and_lists_the_offer() {
        let e = negotiate(&webcam(), &want(PixelFormat::Nv12, 640, 480, 30)).unwrap_err();
        assert!(e.contains("no Nv12 mode") && e.contains("Mjpeg 1920x1080 @ 30 fps"), "{e}");
        assert!(negotiate(&[], &want(PixelFormat::Any, 640, 480, 30)).is_err());
    }

    #[test]
    fn a_missing_device_is_retried_until_stopped() {
        // No camera here: the loop must keep trying (logging) and stop promptly when told.
        let ctx = SourceContext::new("test", 5.0);
        let settings = want(PixelFormat::Any, 640, 480, 30);
        let settings = V4l2Settings { device: "/dev/video-vigil-test-missing".into(), ..settings };
        let (hb, stop, status) = (ctx.heartbeat.clone(), ctx.stop.clone(), ctx.status.clone());
        let began = std::time::Instant::now();
        let t = std::thread::spawn(move || run(&settings, &ctx));
        // A beat seen well after the first attempt: the retry loop keeps beating. Waited for
        // (not slept on), so a loaded machine only makes it slower.
        loop {
            let last_beat = began.elapsed().saturating_sub(hb.age());
            if last_beat >= Duration::from_millis(600) {
                break;
            }
            assert!(began.elapsed() < Duration::from_secs(20), "the retry loop stopped beating");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!status.is_running(), "a camera that cannot be opened is not running");
        assert_eq!(status.reconnects(), 0, "failed attempts are not reconnections");
        stop.store(true, Ordering::Relaxed);
        let started = std::time::Instant::now();
        t.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "stops within moments");
    }
}
