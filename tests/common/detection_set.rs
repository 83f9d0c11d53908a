//! A detection data set made from real images, for the detector trainer's tests: Fashion-MNIST
//! objects (Debian's dataset-fashion-mnist, written as PNGs by tests/data/make_fashion_mnist.py)
//! pasted at random positions and scales onto random crops of the bundled photos
//! (tests/photos), each object's box the tight box of its pixels. Written twice, the same
//! images and boxes: as YOLO data (`data.yaml`, `images/<split>/`, `labels/<split>/`) and as
//! COCO data (`annotations/instances_<split>.json`, `<split>/`).
//!
//! A Fashion-MNIST object is a light garment on black: its grey level is used as its alpha,
//! so the photo shows through around it, and it is tinted with a random colour.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{imageops, Rgb, RgbImage};

use super::root;

/// Image size of the set (a camera frame's 4:3).
pub const WIDTH: u32 = 256;
pub const HEIGHT: u32 = 192;

/// One pasted object: class and box in pixels (x1, y1, x2, y2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub class: usize,
    pub bbox: [u32; 4],
}

/// A tiny seeded generator (SplitMix64), so the set is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo + 1) as u64) as u32
    }
}

/// Writes the set into `dir` (`dir/data.yaml` for YOLO, `dir/coco/` for COCO) with
/// `counts` images in train, val and test, objects of `classes` (Fashion-MNIST class
/// names, e.g. ["Trouser", "Bag"]; written lower-case). About one image in ten is a
/// background image. Returns each split's objects per image.
pub fn make(dir: &Path, classes: &[&str], counts: [usize; 3], seed: u64) -> Vec<Vec<Vec<Placed>>> {
    let objects_dir = dir.join("objects");
    let status = Command::new("python3")
        .arg(root().join("tests/data/make_fashion_mnist.py"))
        .arg(&objects_dir)
        .args(["--train", "60", "--val", "20", "--test", "20", "--classes", &classes.join(",")])
        .status()
        .unwrap();
    assert!(status.success(), "make_fashion_mnist.py failed (is dataset-fashion-mnist installed?)");
    let photos: Vec<RgbImage> = ["astronaut.png", "chelsea.png", "coffee.png", "group.png", "motorcycle_left.png"]
        .iter()
        .map(|f| image::open(root().join("tests/photos").join(f)).unwrap().to_rgb8())
        .collect();
    let names: Vec<String> = classes.iter().map(|c| c.to_lowercase()).collect();
    let mut rng = Rng(seed);
    let mut all = Vec::new();
    for (split, count) in ["train", "val", "test"].into_iter().zip(counts) {
        // Each split pastes its own Fashion-MNIST images (the script's train/val/test).
        let objects: Vec<Vec<image::GrayImage>> = classes
            .iter()
            .map(|c| {
                let mut files: Vec<PathBuf> =
                    std::fs::read_dir(objects_dir.join(split).join(c)).unwrap().map(|e| e.unwrap().path()).collect();
                files.sort();
                files.iter().map(|f| image::open(f).unwrap().to_luma8()).collect()
            })
            .collect();
        let yolo_images = dir.join("images").join(split);
        let yolo_labels = dir.join("labels").join(split);
        let coco_images = dir.join("coco").join(split);
        for d in [&yolo_images, &yolo_labels, &coco_images] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut coco_images_json = Vec::new();
        let mut coco_annotations = Vec::new();
        let mut split_objects = Vec::new();
        for n in 0..count {
            let (frame, placed) = compose(&photos, &objects, &mut rng);
            let file = format!("{split}{n:04}.png");
            frame.save(yolo_images.join(&file)).unwrap();
            std::fs::copy(yolo_images.join(&file), coco_images.join(&file)).unwrap();
            let mut label = String::new();
            for p in &placed {
                let [x1, y1, x2, y2] = p.bbox.map(|v| v as f64);
                let (w, h) = (WIDTH as f64, HEIGHT as f64);
                label += &format!(
                    "{} {:.6} {:.6} {:.6} {:.6}\n",
                    p.class,
                    (x1 + x2) / 2.0 / w,
                    (y1 + y2) / 2.0 / h,
                    (x2 - x1) / w,
                    (y2 - y1) / h
                );
                coco_annotations.push(serde_json::json!({
                    "id": coco_annotations.len() + 1,
                    "image_id": n + 1,
                    "category_id": p.class + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }));
            }
            // A background image has no label file, as YOLO tools write it.
            if !placed.is_empty() {
                std::fs::write(yolo_labels.join(format!("{split}{n:04}.txt")), label).unwrap();
            }
            coco_images_json
                .push(serde_json::json!({"id": n + 1, "file_name": file, "width": WIDTH, "height": HEIGHT}));
            split_objects.push(placed);
        }
        let categories: Vec<serde_json::Value> =
            names.iter().enumerate().map(|(i, n)| serde_json::json!({"id": i + 1, "name": n})).collect();
        let coco =
            serde_json::json!({"images": coco_images_json, "annotations": coco_annotations, "categories": categories});
        std::fs::create_dir_all(dir.join("coco/annotations")).unwrap();
        std::fs::write(dir.join(format!("coco/annotations/instances_{split}.json")), coco.to_string()).unwrap();
        all.push(split_objects);
    }
    let yaml =
        format!("path: .\ntrain: images/train\nval: images/val\ntest: images/test\nnames: [{}]\n", names.join(", "));
    std::fs::write(dir.join("data.yaml"), yaml).unwrap();
    all
}

/// One frame: a random crop of a random photo, and up to three objects that do not overlap.
fn compose(photos: &[RgbImage], objects: &[Vec<image::GrayImage>], rng: &mut Rng) -> (RgbImage, Vec<Placed>) {
    let photo = &photos[rng.below(photos.len() as u64) as usize];
    let cw = rng.range(photo.width() / 2, photo.width());
    let ch = (cw * 3 / 4).min(photo.height());
    let (x0, y0) = (rng.range(0, photo.width() - cw), rng.range(0, photo.height() - ch));
    let crop = imageops::crop_imm(photo, x0, y0, cw, ch).to_image();
    let mut frame = imageops::resize(&crop, WIDTH, HEIGHT, imageops::FilterType::Triangle);
    let wanted = if rng.below(10) == 0 { 0 } else { rng.range(1, 3) };
    let mut placed: Vec<Placed> = Vec::new();
    for _ in 0..wanted {
        let class = rng.below(objects.len() as u64) as usize;
        let object = &objects[class][rng.below(objects[class].len() as u64) as usize];
        let side = rng.range(40, 96);
        let scaled = imageops::resize(object, side, side, imageops::FilterType::Triangle);
        let tint = [rng.range(120, 255), rng.range(120, 255), rng.range(120, 255)];
        // Up to ten tries at a position that overlaps no earlier object.
        for _ in 0..10 {
            let (x, y) = (rng.range(0, WIDTH - side), rng.range(0, HEIGHT - side));
            let Some(tight) = tight_box(&scaled, 40) else { break };
            let bbox = [x + tight[0], y + tight[1], x + tight[2], y + tight[3]];
            let overlaps = placed
                .iter()
                .any(|p| bbox[0] < p.bbox[2] && p.bbox[0] < bbox[2] && bbox[1] < p.bbox[3] && p.bbox[1] < bbox[3]);
            if overlaps {
                continue;
            }
            for (ox, oy, g) in scaled.enumerate_pixels() {
                let alpha = g.0[0] as f32 / 255.0;
                let px = frame.get_pixel_mut(x + ox, y + oy);
                let blended: [u8; 3] = std::array::from_fn(|c| {
                    let object = tint[c] as f32 * alpha.sqrt();
                    (object * alpha + px.0[c] as f32 * (1.0 - alpha)).round() as u8
                });
                *px = Rgb(blended);
            }
            placed.push(Placed { class, bbox });
            break;
        }
    }
    (frame, placed)
}

/// The box (x1, y1, x2, y2, exclusive ends) of the pixels brighter than `level`.
fn tight_box(object: &image::GrayImage, level: u8) -> Option<[u32; 4]> {
    let mut b: Option<[u32; 4]> = None;
    for (x, y, g) in object.enumerate_pixels() {
        if g.0[0] > level {
            b = Some(match b {
                None => [x, y, x + 1, y + 1],
                Some([x1, y1, x2, y2]) => [x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1)],
            });
        }
    }
    b
}
