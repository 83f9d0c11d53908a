//! The trainer's data: each split's images read and resized exactly as `vigil infer` does
//! (not normalised: augmentation works on raw 0–255 pixels, normalisation follows on the
//! device), either held whole on the training device or read from disk batch by batch.
//!
//! A split whose tensor fits in what is left of the memory budget (`--cache-mb`) is decoded
//! once, in parallel, and kept on the device. A larger one is streamed: for every pass a
//! reader thread decodes each batch in parallel on `threads` threads, and runs up to
//! [`PREFETCH`] batches ahead of the training loop, so decoding overlaps the device's work
//! and memory holds a few batches, never the dataset. Both give the same tensors for the
//! same order of images.

use std::sync::{mpsc, Arc};

use anyhow::Context;
use tch::{Device, Tensor};

use crate::dataset::Sample;
use crate::model::manifest::{ChannelOrder, InputSpec, Layout};
use crate::model::preprocess;

/// Batches decoded ahead of the training loop when streaming.
const PREFETCH: usize = 4;

/// How splits are held.
#[derive(Debug, Clone, Copy)]
pub struct LoaderOptions {
    /// Bytes of decoded images the splits may keep on the device, in all.
    pub budget: usize,
    /// Threads decoding images.
    pub threads: usize,
}

impl LoaderOptions {
    pub fn threads_default() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

enum Images {
    /// Decoded once, [N, 3, H, W] on the training device.
    Resident(Tensor),
    /// Decoded from the files for every pass.
    Streamed,
}

/// One split: its files and labels, and its images, resident or streamed.
pub struct Split {
    reader: Arc<Reader>,
    labels: Tensor,
    images: Images,
    device: Device,
}

/// The spec without normalisation: raw RGB 0–255 in NCHW, resized as the manifest says.
fn raw_spec(spec: &InputSpec) -> InputSpec {
    InputSpec {
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        channels: ChannelOrder::Rgb,
        layout: Layout::Nchw,
        ..spec.clone()
    }
}

impl Split {
    /// Takes what it needs of `budget` (bytes) if the whole split fits, otherwise streams.
    pub fn load(
        samples: &[Sample],
        spec: &InputSpec,
        device: Device,
        options: &LoaderOptions,
        budget: &mut usize,
    ) -> anyhow::Result<Split> {
        let spec = raw_spec(spec);
        let labels: Vec<i64> = samples.iter().map(|s| s.class as i64).collect();
        let reader = Arc::new(Reader { samples: samples.to_vec(), spec, threads: options.threads.max(1) });
        let bytes = samples.len() * reader.image_len() * 4;
        let images = if bytes <= *budget {
            *budget -= bytes;
            let all: Vec<usize> = (0..samples.len()).collect();
            Images::Resident(reader.tensor(&reader.decode(&all)?, all.len(), device))
        } else {
            Images::Streamed
        };
        Ok(Split { reader, labels: Tensor::from_slice(&labels).to_device(device), images, device })
    }

    pub fn len(&self) -> usize {
        self.reader.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reader.samples.is_empty()
    }

    pub fn resident(&self) -> bool {
        matches!(self.images, Images::Resident(_))
    }

    /// The labels, in the split's order, on the device.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// The whole split in its own order, in batches of `batch`.
    pub fn in_order(&self, batch: usize) -> Batches<'_> {
        let order: Vec<usize> = (0..self.len()).collect();
        self.batches(&order, batch)
    }

    /// The split in batches of `batch` in the order `order` (indices into the split):
    /// (images [B, 3, H, W], labels [B]) on the device.
    pub fn batches(&self, order: &[usize], batch: usize) -> Batches<'_> {
        let chunks: Vec<Vec<usize>> = order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect();
        match &self.images {
            Images::Resident(_) => Batches { split: self, chunks: chunks.into_iter(), ahead: None },
            Images::Streamed => {
                let (tx, rx) = mpsc::sync_channel(PREFETCH);
                let reader = self.reader.clone();
                let work = chunks.clone();
                std::thread::Builder::new()
                    .name("vigil-loader".into())
                    .spawn(move || {
                        for chunk in work {
                            // The loop has stopped (an error, early stop): so does reading.
                            if tx.send(reader.decode(&chunk)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("cannot start the data loader thread");
                Batches { split: self, chunks: chunks.into_iter(), ahead: Some(rx) }
            }
        }
    }
}

/// A split's files and how to read them (shared with the reader thread).
struct Reader {
    samples: Vec<Sample>,
    spec: InputSpec,
    threads: usize,
}

impl Reader {
    fn image_len(&self) -> usize {
        3 * self.spec.width * self.spec.height
    }

    /// [len, 3, H, W] on `device` from decoded data.
    fn tensor(&self, data: &[f32], len: usize, device: Device) -> Tensor {
        let shape = [len as i64, 3, self.spec.height as i64, self.spec.width as i64];
        Tensor::from_slice(data).reshape(shape).to_device(device)
    }

    /// Reads and resizes the images at `indices` on `threads` threads, into host memory
    /// (device tensors are made on the training loop's thread).
    fn decode(&self, indices: &[usize]) -> anyhow::Result<Vec<f32>> {
        let len = self.image_len();
        let mut data = vec![0f32; indices.len() * len];
        let per_thread = indices.len().div_ceil(self.threads).max(1);
        std::thread::scope(|scope| {
            let jobs: Vec<_> = indices
                .chunks(per_thread)
                .zip(data.chunks_mut(per_thread * len))
                .map(|(which, out)| {
                    scope.spawn(move || -> anyhow::Result<()> {
                        for (&i, slot) in which.iter().zip(out.chunks_mut(len)) {
                            let image = crate::dataset::read_image(&self.samples[i].path)?;
                            slot.copy_from_slice(&preprocess(&image, &self.spec).0.data);
                        }
                        Ok(())
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| j.join().expect("an image reader panicked"))
        })?;
        Ok(data)
    }
}

/// Iterator over a split's batches (see [`Split::batches`]).
pub struct Batches<'a> {
    split: &'a Split,
    chunks: std::vec::IntoIter<Vec<usize>>,
    /// Streaming: batches decoded ahead, in order.
    ahead: Option<mpsc::Receiver<anyhow::Result<Vec<f32>>>>,
}

impl Iterator for Batches<'_> {
    type Item = anyhow::Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.chunks.next()?;
        let split = self.split;
        let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(split.device);
        let labels = split.labels.index_select(0, &idx);
        let images = match (&split.images, &self.ahead) {
            (Images::Resident(all), _) => Ok(all.index_select(0, &idx)),
            (Images::Streamed, Some(ahead)) => ahead
                .recv()
                .context("the data loader thread stopped")
                .and_then(|data| Ok(split.reader.tensor(&data?, chunk.len(), split.device))),
            (Images::Streamed, None) => unreachable!("a streamed split always reads ahead"),
        };
        Some(images.map(|x| (x, labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_batches_equal_resident_ones() {
        let photos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/photos");
        let mut samples: Vec<Sample> = std::fs::read_dir(&photos)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
            .enumerate()
            .map(|(i, path)| Sample { path, class: i % 3 })
            .collect();
        samples.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(samples.len() >= 4, "{samples:?}");
        let spec = crate::model::ModelManifest::load(&photos.join("../../models/mobilenet-v2.toml")).unwrap().input;
        let spec = InputSpec { width: 32, height: 32, ..spec };
        let options = LoaderOptions { budget: usize::MAX, threads: 3 };
        let resident = Split::load(&samples, &spec, Device::Cpu, &options, &mut usize::MAX.clone()).unwrap();
        let streamed = Split::load(&samples, &spec, Device::Cpu, &options, &mut 0).unwrap();
        assert!(resident.resident() && !streamed.resident());
        let order: Vec<usize> = (0..samples.len()).rev().collect();
        let a: Vec<_> = resident.batches(&order, 3).map(Result::unwrap).collect();
        let b: Vec<_> = streamed.batches(&order, 3).map(Result::unwrap).collect();
        assert_eq!(a.len(), samples.len().div_ceil(3));
        for ((xa, ya), (xb, yb)) in a.iter().zip(&b) {
            assert_eq!(xa.size(), xb.size());
            assert!(xa.equal(xb) && ya.equal(yb), "a streamed batch differs from the resident one");
        }
        // An unreadable file is named when its batch comes.
        let mut broken = samples.clone();
        broken[1].path = photos.join("no-such-image.png");
        let streamed = Split::load(&broken, &spec, Device::Cpu, &options, &mut 0).unwrap();
        let err = streamed.batches(&order, 2).find_map(Result::err).unwrap();
        assert!(format!("{err:#}").contains("no-such-image.png"), "{err:#}");
    }
}
