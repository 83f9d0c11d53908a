//! An ONNX graph as a trainable tch module.
//!
//! The graph is read with prost (tract's ONNX protobuf types). Float initializers become
//! trainable variables in a `VarStore`; the nodes run in file order (ONNX stores them
//! topologically sorted) as tch operations, so autograd sees the whole network. Only the
//! operators of CNN classifiers exported by torchvision and of the bundled NanoDet-m are
//! supported; any other is refused by name at load time, before anything runs. A graph may
//! have several outputs ([`GraphModule::forward_all_t`]).
//!
//! [`GraphModule::forward_t`] runs BatchNormalization as PyTorch's `BatchNorm2d` does in
//! training mode (batch statistics, running statistics updated); [`GraphModule::forward`]
//! as at inference (the stored running statistics), which is what ONNX runtimes compute.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use prost::Message;
use tch::{nn, Device, Kind, Tensor};
use tract_onnx::pb;

use crate::model::fixed_shape;

/// The operators the importer runs.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Sigmoid",
    "Split",
    "Sub",
    "Transpose",
];

/// The initializer names of a detector's new output convolutions: this, the head's number
/// from 1, then `_weight` or `_bias`.
const DETECTION_HEAD_PREFIX: &str = "vigil_det_head";

/// One node, its operator decoded.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    op: Op,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

#[derive(Debug, Clone)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
    Conv {
        strides: Vec<i64>,
        pads: Vec<i64>,
        dilations: Vec<i64>,
        group: i64,
    },
    Gemm {
        alpha: f64,
        beta: f64,
        trans_a: bool,
        trans_b: bool,
    },
    Clip {
        min: f64,
        max: f64,
    },
    Relu,
    LeakyRelu {
        alpha: f64,
    },
    Sigmoid,
    /// Constant padding; `pads` in torch's order (last dimension first, begin then end).
    Pad {
        pads: Vec<i64>,
        value: f64,
    },
    /// Linear resizing with half-pixel centres (torch's bilinear, `align_corners = false`)
    /// by a scale factor per spatial dimension.
    Resize {
        scales: [f64; 2],
    },
    Split {
        axis: i64,
        sizes: Vec<i64>,
    },
    Transpose {
        perm: Vec<i64>,
    },
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    HardSwish,
    GlobalAveragePool,
    AveragePool {
        kernel: Vec<i64>,
        strides: Vec<i64>,
        pads: Vec<i64>,
        count_include_pad: bool,
        ceil_mode: bool,
    },
    MaxPool {
        kernel: Vec<i64>,
        strides: Vec<i64>,
        pads: Vec<i64>,
        ceil_mode: bool,
    },
    BatchNormalization {
        epsilon: f64,
        /// PyTorch's convention: the weight of the new batch statistic in the running
        /// average (ONNX's `momentum` attribute is the weight of the old value).
        momentum: f64,
    },
    Flatten {
        axis: i64,
    },
    Reshape,
    ReduceMean {
        axes: Vec<i64>,
        keepdims: bool,
    },
    Concat {
        axis: i64,
    },
    /// Identity and Dropout (inference graphs carry no dropout mask).
    PassThrough,
    /// Constant nodes are turned into constants at load time.
    Constant,
}

/// A classifier's final fully-connected layer, as found in the graph.
#[derive(Debug, Clone)]
pub struct Head {
    /// The Gemm node's name.
    pub node: String,
    pub weight: String,
    pub bias: Option<String>,
    pub features: i64,
    pub classes: i64,
}

/// A loaded graph: its variables live in `vs`.
pub struct GraphModule {
    pub vs: nn::VarStore,
    proto: pb::ModelProto,
    nodes: Vec<Node>,
    /// Initializer name → trainable variable.
    params: HashMap<String, Tensor>,
    /// Non-trainable values: integer initializers (shapes), Constant nodes.
    consts: HashMap<String, Tensor>,
    input: String,
    outputs: Vec<String>,
    pub input_shape: Vec<i64>,
}

impl std::fmt::Debug for GraphModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphModule")
            .field("nodes", &self.nodes.len())
            .field("params", &self.params.len())
            .field("input", &self.input)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl GraphModule {
    /// Loads `path` onto `device`, refusing unsupported operators by name.
    pub fn load(path: &Path, device: Device) -> anyhow::Result<GraphModule> {
        let bytes = crate::files::read_capped(path, crate::model::MAX_ONNX_BYTES)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let proto = pb::ModelProto::decode(bytes.as_slice())
            .with_context(|| format!("{} is not an ONNX model", path.display()))?;
        GraphModule::from_proto(proto, device).with_context(|| format!("cannot import {}", path.display()))
    }

    fn from_proto(proto: pb::ModelProto, device: Device) -> anyhow::Result<GraphModule> {
        let graph = proto.graph.as_ref().context("the model has no graph")?;
        let unsupported: Vec<String> = graph
            .node
            .iter()
            .filter(|n| !SUPPORTED_OPS.contains(&n.op_type.as_str()) || !n.domain.is_empty())
            .map(|n| format!("{} (node \"{}\")", n.op_type, n.name))
            .collect();
        if !unsupported.is_empty() {
            bail!(
                "unsupported ONNX operator(s) for training: {}; supported: {}",
                unsupported.join(", "),
                SUPPORTED_OPS.join(", ")
            );
        }

        let initializer_names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> =
            graph.input.iter().filter(|i| !initializer_names.contains(&i.name.as_str())).collect();
        if inputs.len() != 1 || graph.output.is_empty() {
            bail!(
                "expected one image input and at least one output, found inputs {:?} and outputs {:?}",
                inputs.iter().map(|i| &i.name).collect::<Vec<_>>(),
                graph.output.iter().map(|o| &o.name).collect::<Vec<_>>()
            );
        }
        let input_shape = value_shape(inputs[0]);

        // Initializers that are settings (pads, scales, bounds, shapes), not weights, stay
        // constants even when they are floats.
        let settings: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| {
                let positions: &[usize] = match n.op_type.as_str() {
                    "Pad" | "Clip" => &[1, 2],
                    "Resize" => &[1, 2, 3],
                    "Split" | "Reshape" | "ReduceMean" => &[1],
                    _ => &[],
                };
                positions.iter().filter_map(|&i| n.input.get(i).map(String::as_str))
            })
            .collect();
        let vs = nn::VarStore::new(device);
        let mut params = HashMap::new();
        let mut consts = HashMap::new();
        for (i, init) in graph.initializer.iter().enumerate() {
            let t = tensor_from_proto(init).with_context(|| format!("initializer \"{}\"", init.name))?;
            if t.kind() == Kind::Float && !settings.contains(init.name.as_str()) {
                // VarStore names may not contain '.', which ONNX names often do.
                let var = vs.root().var_copy(&format!("p{i}"), &t.to_device(device));
                params.insert(init.name.clone(), var);
            } else {
                consts.insert(init.name.clone(), t);
            }
        }

        let mut nodes = Vec::new();
        for n in &graph.node {
            let op = decode_op(n, &consts).with_context(|| format!("node \"{}\" ({})", n.name, n.op_type))?;
            if let Op::Constant = op {
                let value = attr(n, "value")
                    .and_then(|a| a.t.as_ref())
                    .with_context(|| format!("Constant node \"{}\" has no tensor value", n.name))?;
                let t = tensor_from_proto(value)?;
                consts.insert(n.output[0].clone(), if t.kind() == Kind::Float { t.to_device(device) } else { t });
                continue;
            }
            // Running statistics are buffers, not parameters: no optimiser may touch them.
            if let Op::BatchNormalization { .. } = op {
                for stat in n.input.iter().skip(3).take(2) {
                    if let Some(t) = params.get(stat) {
                        let _ = t.set_requires_grad(false);
                    }
                }
            }
            nodes.push(Node { name: n.name.clone(), op, inputs: n.input.clone(), outputs: n.output.clone() });
        }
        Ok(GraphModule {
            input: inputs[0].name.clone(),
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
            input_shape,
            vs,
            proto,
            nodes,
            params,
            consts,
        })
    }

    /// Runs the graph as at inference. Gradients flow to every variable that requires them.
    pub fn forward(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        self.forward_t(x, false)
    }

    /// Whether the graph has BatchNormalization nodes (which [`forward_t`](Self::forward_t)
    /// runs in training mode).
    pub fn has_batchnorm(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n.op, Op::BatchNormalization { .. }))
    }

    /// Runs a graph with one output; with `train`, BatchNormalization normalises by the
    /// batch's own statistics and updates the running mean and variance in place (unbiased
    /// variance, the node's momentum), as `torch.nn.BatchNorm2d` does in training mode. A
    /// batch statistic over a single value per channel is refused, as torch refuses it.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> anyhow::Result<Tensor> {
        if self.outputs.len() != 1 {
            bail!("the graph has {} outputs ({:?}); expected one", self.outputs.len(), self.outputs);
        }
        Ok(self.forward_all_t(x, train)?.remove(0))
    }

    /// The graph's outputs, in its order (see [`forward_t`](Self::forward_t) for `train`).
    pub fn forward_all_t(&self, x: &Tensor, train: bool) -> anyhow::Result<Vec<Tensor>> {
        let mut env: HashMap<&str, Tensor> = HashMap::new();
        env.insert(self.input.as_str(), x.shallow_clone());
        for node in &self.nodes {
            let get = |i: usize| -> anyhow::Result<Tensor> {
                let name = node.inputs.get(i).map(String::as_str).unwrap_or("");
                env.get(name)
                    .or_else(|| self.params.get(name))
                    .or_else(|| self.consts.get(name))
                    .map(Tensor::shallow_clone)
                    .with_context(|| format!("node \"{}\": input {i} \"{name}\" is not computed", node.name))
            };
            let has = |i: usize| node.inputs.get(i).is_some_and(|n| !n.is_empty());
            if let Op::Split { axis, sizes } = &node.op {
                let parts = get(0)?.split_with_sizes(sizes.as_slice(), *axis);
                for (name, part) in node.outputs.iter().zip(parts) {
                    env.insert(name.as_str(), part);
                }
                continue;
            }
            let y = match &node.op {
                Op::Add => get(0)? + get(1)?,
                Op::Sub => get(0)? - get(1)?,
                Op::Mul => get(0)? * get(1)?,
                Op::Div => get(0)? / get(1)?,
                Op::MatMul => get(0)?.matmul(&get(1)?),
                Op::Conv { strides, pads, dilations, group } => {
                    let bias = if has(2) { Some(get(2)?) } else { None };
                    let x = get(0)?;
                    let (x, padding) = symmetric_padding(&x, pads);
                    x.conv2d(
                        &get(1)?,
                        bias.as_ref(),
                        strides.as_slice(),
                        padding.as_slice(),
                        dilations.as_slice(),
                        *group,
                    )
                }
                Op::Gemm { alpha, beta, trans_a, trans_b } => {
                    let a = if *trans_a { get(0)?.tr() } else { get(0)? };
                    let b = if *trans_b { get(1)?.tr() } else { get(1)? };
                    match (has(2), *alpha, *beta) {
                        // The usual classifier head: one fused kernel, as torch's Linear.
                        (true, 1.0, 1.0) => get(2)?.addmm(&a, &b),
                        (with_c, alpha, beta) => {
                            let mut y = a.matmul(&b);
                            if alpha != 1.0 {
                                y *= alpha;
                            }
                            if with_c {
                                y += get(2)? * beta;
                            }
                            y
                        }
                    }
                }
                // ReLU6 (MobileNet's Clip) as torch has it: hardtanh, whose backward is one
                // kernel where clamp's takes several.
                Op::Clip { min, max } if (*min, *max) == (0.0, 6.0) => get(0)?.relu6(),
                Op::Clip { min, max } => get(0)?.clamp(*min, *max),
                Op::Relu => get(0)?.relu(),
                // tch's leaky_relu has torch's fixed slope; PReLU with a constant slope is the
                // same function with any.
                Op::LeakyRelu { alpha } => {
                    let x = get(0)?;
                    let slope = Tensor::full([1], *alpha, (x.kind(), x.device()));
                    x.prelu(&slope)
                }
                Op::Pad { pads, value } => get(0)?.pad(pads.as_slice(), "constant", Some(*value)),
                Op::Resize { scales } => {
                    let x = get(0)?;
                    let size = x.size();
                    let out: Vec<i64> = (0..2).map(|i| (size[2 + i] as f64 * scales[i]).floor() as i64).collect();
                    x.upsample_bilinear2d(out.as_slice(), false, Some(scales[0]), Some(scales[1]))
                }
                Op::Transpose { perm } => get(0)?.permute(perm.as_slice()),
                Op::Sigmoid => get(0)?.sigmoid(),
                Op::HardSigmoid { alpha, beta } => (get(0)? * *alpha + *beta).clamp(0.0, 1.0),
                Op::HardSwish => get(0)?.hardswish(),
                Op::GlobalAveragePool => get(0)?.adaptive_avg_pool2d([1, 1]),
                Op::AveragePool { kernel, strides, pads, count_include_pad, ceil_mode } => get(0)?.avg_pool2d(
                    kernel.as_slice(),
                    strides.as_slice(),
                    pool_padding(pads).as_slice(),
                    *ceil_mode,
                    *count_include_pad,
                    None,
                ),
                Op::MaxPool { kernel, strides, pads, ceil_mode } => get(0)?.max_pool2d(
                    kernel.as_slice(),
                    strides.as_slice(),
                    pool_padding(pads).as_slice(),
                    [1, 1],
                    *ceil_mode,
                ),
                Op::BatchNormalization { epsilon, momentum } => {
                    // The running statistics are buffers: updated in place in training
                    // mode, never differentiated.
                    let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
                    let x = get(0)?;
                    // One value per channel has no variance: the running variance would
                    // become NaN (libtorch does not refuse it; torch's Python wrapper does).
                    if train && x.numel() as i64 <= x.size().get(1).copied().unwrap_or(0) {
                        bail!(
                            "node \"{}\": BatchNormalization in training needs more than one value per channel, got {:?}",
                            node.name,
                            x.size()
                        );
                    }
                    x.f_batch_norm(
                        Some(scale),
                        Some(bias),
                        Some(mean.detach()),
                        Some(var.detach()),
                        train,
                        *momentum,
                        *epsilon,
                        false,
                    )
                    .with_context(|| format!("node \"{}\" (BatchNormalization)", node.name))?
                }
                Op::Flatten { axis } => {
                    let x = get(0)?;
                    let axis = if *axis < 0 { axis + x.dim() as i64 } else { *axis };
                    let lead: i64 = x.size()[..axis as usize].iter().product();
                    x.reshape([lead, -1])
                }
                Op::Reshape => {
                    let x = get(0)?;
                    let mut shape = Vec::<i64>::try_from(get(1)?.to_device(Device::Cpu).to_kind(Kind::Int64))?;
                    // ONNX's 0 keeps the input's dimension there.
                    for (i, d) in shape.iter_mut().enumerate() {
                        if *d == 0 {
                            *d = *x.size().get(i).context("Reshape: a 0 beyond the input's dimensions")?;
                        }
                    }
                    x.reshape(shape.as_slice())
                }
                Op::ReduceMean { axes, keepdims } => get(0)?.mean_dim(axes.as_slice(), *keepdims, Kind::Float),
                Op::Concat { axis } => {
                    let parts = (0..node.inputs.len()).map(get).collect::<anyhow::Result<Vec<_>>>()?;
                    Tensor::cat(&parts, *axis)
                }
                Op::PassThrough => get(0)?,
                Op::Constant => unreachable!("constants are folded at load time"),
                Op::Split { .. } => unreachable!("handled above"),
            };
            env.insert(node.outputs[0].as_str(), y);
        }
        self.outputs
            .iter()
            .map(|name| {
                env.remove(name.as_str()).with_context(|| format!("the graph never computes its output \"{name}\""))
            })
            .collect()
    }

    /// The final fully-connected layer: the Gemm node (or MatMul + Add) that produces the
    /// graph's output.
    pub fn head(&self) -> anyhow::Result<Head> {
        let last = self.nodes.last().context("the graph has no nodes")?;
        let Op::Gemm { trans_b, .. } = last.op else {
            bail!(
                "the graph's output comes from a {} node (\"{}\"), not a Gemm: vigil can only replace a fully-connected classifier head",
                op_name(&last.op),
                last.name
            );
        };
        let weight = last.inputs[1].clone();
        let w = self.params.get(&weight).context("the head's weight is not an initializer")?;
        let (classes, features) = if trans_b { (w.size()[0], w.size()[1]) } else { (w.size()[1], w.size()[0]) };
        let bias = last.inputs.get(2).filter(|b| self.params.contains_key(*b)).cloned();
        Ok(Head { node: last.name.clone(), weight, bias, features, classes })
    }

    /// Replaces the head with a fresh one for `classes` classes (weights like torch's
    /// `nn.Linear` initialisation). Returns the new head.
    pub fn replace_head(&mut self, classes: i64) -> anyhow::Result<Head> {
        let head = self.head()?;
        let last = self.nodes.last_mut().unwrap();
        let Op::Gemm { trans_b, .. } = &mut last.op else { unreachable!() };
        let bound = 1.0 / (head.features as f64).sqrt();
        let root = self.vs.root();
        let weight = root.var("head_weight", &[classes, head.features], nn::Init::Uniform { lo: -bound, up: bound });
        let bias = root.var("head_bias", &[classes], nn::Init::Uniform { lo: -bound, up: bound });
        *trans_b = true;
        // The old head's weights leave the model (and the exported file).
        for old in [Some(&head.weight), head.bias.as_ref()].into_iter().flatten() {
            if let Some(t) = self.params.remove(old) {
                let _ = t.set_requires_grad(false);
            }
        }
        let (wname, bname) = ("vigil_head_weight".to_string(), "vigil_head_bias".to_string());
        last.inputs.truncate(1);
        last.inputs.push(wname.clone());
        last.inputs.push(bname.clone());
        self.params.insert(wname.clone(), weight);
        self.params.insert(bname.clone(), bias);
        Ok(Head { node: head.node, weight: wname, bias: Some(bname), features: head.features, classes })
    }

    /// The variables that take gradients, ordered by their ONNX initializer names, so the
    /// order is the same for a model and for its checkpoint read back (an optimiser's saved
    /// state depends on it).
    pub fn trainable(&self) -> Vec<Tensor> {
        self.trainable_named().into_iter().map(|(_, t)| t.shallow_clone()).collect()
    }

    /// The variables that take gradients with their names, in [`trainable`](Self::trainable)'s order.
    fn trainable_named(&self) -> Vec<(&String, &Tensor)> {
        let mut named: Vec<(&String, &Tensor)> = self.params.iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named
    }

    /// Whether the trainable variable at `index` of [`trainable`](Self::trainable) belongs
    /// to the head, for each of them in that order.
    pub fn trainable_in_head(&self) -> anyhow::Result<Vec<bool>> {
        let head = self.head_names()?;
        Ok(self.trainable_named().into_iter().map(|(n, _)| head.contains(n)).collect())
    }

    /// The variables of the head: a classifier's final fully-connected layer, or the
    /// output convolutions of a detector prepared by [`detection_logits`](Self::detection_logits)
    /// with new classes.
    fn head_names(&self) -> anyhow::Result<Vec<String>> {
        let detection: Vec<String> =
            self.params.keys().filter(|n| n.starts_with(DETECTION_HEAD_PREFIX)).cloned().collect();
        if !detection.is_empty() {
            return Ok(detection);
        }
        let head = self.head()?;
        Ok([Some(head.weight), head.bias].into_iter().flatten().collect())
    }

    /// Prepares a NanoDet-style detector for training. Each of its heads is a Conv whose
    /// output is Split into [classes, box bins], the class part going through a Sigmoid, a
    /// Reshape to [1, classes, −1] and a Transpose to a graph output. The Sigmoids are
    /// skipped, so the class outputs are logits (the losses take logits). With `classes`,
    /// each head's class rows are replaced by fresh ones — weights N(0, 0.01), bias −4.595,
    /// a prior score of 0.01, as NanoDet initialises them — and the box rows are kept.
    /// Returns the number of heads.
    pub fn detection_logits(&mut self, classes: Option<i64>) -> anyhow::Result<usize> {
        let produced_by =
            |nodes: &[Node], name: &str| nodes.iter().position(|n| n.outputs.first().is_some_and(|o| o == name));
        let consumers = |nodes: &[Node], name: &str| -> Vec<usize> {
            nodes.iter().enumerate().filter(|(_, n)| n.inputs.iter().any(|i| i == name)).map(|(k, _)| k).collect()
        };
        let splits: Vec<usize> =
            self.nodes.iter().enumerate().filter(|(_, n)| matches!(n.op, Op::Split { .. })).map(|(k, _)| k).collect();
        let mut heads = 0;
        for s in splits {
            let Op::Split { sizes, .. } = &self.nodes[s].op else { unreachable!() };
            let (old_classes, bins) = match sizes.as_slice() {
                [c, b] => (*c, *b),
                _ => continue,
            };
            let Some(conv) = produced_by(&self.nodes, &self.nodes[s].inputs[0]) else { continue };
            let Ok([sigmoid]) = <[usize; 1]>::try_from(consumers(&self.nodes, &self.nodes[s].outputs[0])) else {
                continue;
            };
            let (Op::Conv { .. }, Op::Sigmoid) = (&self.nodes[conv].op, &self.nodes[sigmoid].op) else { continue };
            let is_reshape = |k: &usize| matches!(self.nodes[*k].op, Op::Reshape) && self.nodes[*k].inputs.len() >= 2;
            let Ok([reshape]) = <[usize; 1]>::try_from(consumers(&self.nodes, &self.nodes[sigmoid].outputs[0])) else {
                continue;
            };
            let Some(box_reshape) = consumers(&self.nodes, &self.nodes[s].outputs[1]).into_iter().find(is_reshape)
            else {
                continue;
            };
            if !is_reshape(&reshape) {
                continue;
            }
            heads += 1;
            self.nodes[sigmoid].op = Op::PassThrough;
            let count = classes.unwrap_or(old_classes);
            // Both branches' Reshapes to [1, n, −1] keep the batch (0: the input's dimension)
            // so that a batch of images is not folded into one; the class branch takes the
            // new class count.
            for (k, node, n, old) in [(0, reshape, count, old_classes), (1, box_reshape, bins, bins)] {
                let name = self.nodes[node].inputs[1].clone();
                let shape =
                    Vec::<i64>::try_from(self.consts.get(&name).context("a head's Reshape has no constant shape")?)?;
                if shape.len() != 3 || shape[1] != old {
                    bail!("head \"{}\": the Reshape {shape:?} is not [batch, {old}, −1]", self.nodes[conv].name);
                }
                let new = format!("vigil_det_head{heads}_shape{k}");
                self.consts.insert(new.clone(), Tensor::from_slice(&[0, n, shape[2]]));
                self.nodes[node].inputs[1] = new;
            }
            let Some(classes) = classes else { continue };

            let (w_name, b_name) = (self.nodes[conv].inputs[1].clone(), self.nodes[conv].inputs.get(2).cloned());
            let w = self.params.get(&w_name).context("a detection head's weight is not an initializer")?;
            let b = b_name.as_ref().and_then(|n| self.params.get(n)).context("a detection head has no bias")?;
            if w.size()[0] != old_classes + bins {
                bail!(
                    "head \"{}\": {} output channels for a split into {old_classes} + {bins}",
                    self.nodes[conv].name,
                    w.size()[0]
                );
            }
            let _guard = tch::no_grad_guard();
            let root = self.vs.root();
            let fresh_w =
                Tensor::randn([classes, w.size()[1], w.size()[2], w.size()[3]], (Kind::Float, w.device())) * 0.01;
            let fresh_b = Tensor::full([classes], -4.595, (Kind::Float, b.device()));
            let new_w = root
                .var_copy(&format!("head{heads}_weight"), &Tensor::cat(&[fresh_w, w.narrow(0, old_classes, bins)], 0));
            let new_b = root
                .var_copy(&format!("head{heads}_bias"), &Tensor::cat(&[fresh_b, b.narrow(0, old_classes, bins)], 0));
            for old in [&w_name, b_name.as_ref().unwrap()] {
                if let Some(t) = self.params.remove(old) {
                    let _ = t.set_requires_grad(false);
                }
            }
            let (wn, bn) =
                (format!("{DETECTION_HEAD_PREFIX}{heads}_weight"), format!("{DETECTION_HEAD_PREFIX}{heads}_bias"));
            self.params.insert(wn.clone(), new_w);
            self.params.insert(bn.clone(), new_b);
            self.nodes[conv].inputs.truncate(1);
            self.nodes[conv].inputs.extend([wn, bn]);
            self.nodes[s].op = match &self.nodes[s].op {
                Op::Split { axis, .. } => Op::Split { axis: *axis, sizes: vec![classes, bins] },
                _ => unreachable!(),
            };
            // The export reads the split sizes from the node's constant input.
            let sizes = format!("vigil_det_head{heads}_split");
            self.consts.insert(sizes.clone(), Tensor::from_slice(&[classes, bins]));
            self.nodes[s].inputs[1] = sizes;
        }
        if heads == 0 {
            bail!("no detection head found (a Conv split into classes and box bins, the classes through a Sigmoid)");
        }
        Ok(heads)
    }

    /// Freezes every variable but the head's.
    pub fn freeze_backbone(&self) -> anyhow::Result<()> {
        let head = self.head_names()?;
        for (name, t) in &self.params {
            let _ = t.set_requires_grad(head.contains(name));
        }
        Ok(())
    }

    /// The ONNX model with the current weights (and head) written back.
    pub fn to_onnx(&self) -> anyhow::Result<pb::ModelProto> {
        self.to_onnx_with_input(None)
    }

    /// Like [`to_onnx`](Self::to_onnx), declaring the graph's input as `input` (e.g. the
    /// size the model was fine-tuned at). Intermediate shape annotations are dropped: they
    /// describe the original size, and runtimes infer them again.
    pub fn to_onnx_with_input(&self, input: Option<[i64; 4]>) -> anyhow::Result<pb::ModelProto> {
        let mut proto = self.proto.clone();
        let graph = proto.graph.as_mut().unwrap();
        // Node inputs follow the module: a replaced head's weights, a detector's new shapes
        // and split sizes. The module holds the file's nodes in order, less Constant nodes.
        let file_nodes = graph.node.iter_mut().filter(|n| n.op_type != "Constant");
        for (node, ours) in file_nodes.zip(&self.nodes) {
            node.input.clone_from(&ours.inputs);
        }
        let computed: std::collections::HashSet<String> = graph.node.iter().flat_map(|n| n.output.clone()).collect();
        let used: std::collections::HashSet<&String> = self.nodes.iter().flat_map(|n| &n.inputs).collect();
        let was_initializer: std::collections::HashSet<String> =
            graph.initializer.iter().map(|i| i.name.clone()).collect();
        graph.initializer.retain(|i| used.contains(&i.name));
        // A file that lists its initializers as graph inputs too (older exporters) must not
        // keep listing the ones that left: they would become inputs without a value.
        let kept: std::collections::HashSet<String> = graph.initializer.iter().map(|i| i.name.clone()).collect();
        graph.input.retain(|i| !was_initializer.contains(&i.name) || kept.contains(&i.name));
        for init in graph.initializer.iter_mut() {
            if let Some(t) = self.params.get(&init.name) {
                *init = tensor_to_proto(&init.name, t)?;
            }
        }
        // Values the module made (new weights, shapes, sizes) become initializers.
        let mut added: Vec<&String> = used
            .iter()
            .copied()
            .filter(|n| !computed.contains(*n) && !graph.initializer.iter().any(|i| &i.name == *n))
            .filter(|n| self.params.contains_key(*n) || self.consts.contains_key(*n))
            .collect();
        added.sort();
        for name in added {
            let t = self.params.get(name).or_else(|| self.consts.get(name)).unwrap();
            graph.initializer.push(tensor_to_proto(name, t)?);
        }
        match self.head() {
            Ok(head) => {
                let trans_b = match self.nodes.last().map(|n| &n.op) {
                    Some(Op::Gemm { trans_b, .. }) => *trans_b,
                    _ => unreachable!("head() found a Gemm"),
                };
                let node = graph.node.iter_mut().find(|n| n.name == head.node).context("head node vanished")?;
                set_attr_int(node, "transB", trans_b as i64);
                // The output's class dimension follows the new head.
                if let Some(pb::type_proto::Value::TensorType(t)) =
                    graph.output[0].r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    if let Some(last) = t.shape.as_mut().and_then(|s| s.dim.last_mut()) {
                        last.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(head.classes));
                    }
                }
            }
            // A detector's outputs and the values before them change with its classes:
            // runtimes infer their shapes.
            Err(_) => {
                graph.value_info.clear();
                for output in graph.output.iter_mut() {
                    if let Some(pb::type_proto::Value::TensorType(t)) =
                        output.r#type.as_mut().and_then(|t| t.value.as_mut())
                    {
                        t.shape = None;
                    }
                }
            }
        }
        let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        graph.value_info.retain(|v| !outputs.contains(&v.name));
        if let Some(dims) = input {
            graph.value_info.clear();
            let declared = graph.input.iter_mut().find(|i| i.name == self.input).context("input vanished")?;
            if let Some(pb::type_proto::Value::TensorType(t)) = declared.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.shape = Some(fixed_shape(&dims));
            }
        }
        Ok(proto)
    }
}

fn op_name(op: &Op) -> String {
    format!("{op:?}").split([' ', '{']).next().unwrap_or("?").to_string()
}

/// ONNX pads are [x1_begin, x2_begin, x1_end, x2_end]; torch pads symmetrically, so
/// asymmetric pads are applied explicitly first.
fn symmetric_padding(x: &Tensor, pads: &[i64]) -> (Tensor, Vec<i64>) {
    if pads.is_empty() {
        return (x.shallow_clone(), vec![0, 0]);
    }
    let (top, left, bottom, right) = (pads[0], pads[1], pads[2], pads[3]);
    if top == bottom && left == right {
        (x.shallow_clone(), vec![top, left])
    } else {
        (x.constant_pad_nd([left, right, top, bottom]), vec![0, 0])
    }
}

/// Symmetric ONNX pool pads [top, left, bottom, right] as torch's [height, width].
fn pool_padding(pads: &[i64]) -> Vec<i64> {
    if pads.is_empty() {
        vec![0, 0]
    } else {
        vec![pads[0], pads[1]]
    }
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_int(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}

fn attr_float(n: &pb::NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map(|a| a.f as f64).unwrap_or(default)
}

fn set_attr_int(n: &mut pb::NodeProto, name: &str, value: i64) {
    n.attribute.retain(|a| a.name != name);
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    });
}

fn decode_op(n: &pb::NodeProto, consts: &HashMap<String, Tensor>) -> anyhow::Result<Op> {
    let scalar = |i: usize, default: f64| -> anyhow::Result<f64> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(name) => consts
                .get(name)
                .map(|t| t.double_value(&[]))
                .with_context(|| format!("input \"{name}\" must be a constant")),
        }
    };
    let kernel_attrs = |n: &pb::NodeProto| {
        let kernel = attr_ints(n, "kernel_shape").unwrap_or_default();
        let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1; kernel.len().max(2)]);
        let pads = attr_ints(n, "pads").unwrap_or_default();
        (kernel, strides, pads)
    };
    if let Some(a) = attr(n, "auto_pad") {
        let mode = String::from_utf8_lossy(&a.s);
        if mode != "NOTSET" && !mode.is_empty() {
            bail!("auto_pad = {mode} is not supported; export with explicit pads");
        }
    }
    Ok(match n.op_type.as_str() {
        "Add" => Op::Add,
        "Sub" => Op::Sub,
        "Mul" => Op::Mul,
        "Div" => Op::Div,
        "MatMul" => Op::MatMul,
        "Conv" => {
            let (kernel, strides, pads) = kernel_attrs(n);
            if kernel.len() > 2 {
                bail!("only 2-d convolutions are supported, kernel_shape is {kernel:?}");
            }
            Op::Conv {
                strides,
                pads,
                dilations: attr_ints(n, "dilations").unwrap_or_else(|| vec![1, 1]),
                group: attr_int(n, "group", 1),
            }
        }
        "Gemm" => Op::Gemm {
            alpha: attr_float(n, "alpha", 1.0),
            beta: attr_float(n, "beta", 1.0),
            trans_a: attr_int(n, "transA", 0) != 0,
            trans_b: attr_int(n, "transB", 0) != 0,
        },
        "Clip" => {
            // Opset ≥ 11: bounds are inputs; older: attributes.
            let min = attr(n, "min").map(|a| a.f as f64).map_or_else(|| scalar(1, f64::MIN), Ok)?;
            let max = attr(n, "max").map(|a| a.f as f64).map_or_else(|| scalar(2, f64::MAX), Ok)?;
            Op::Clip { min, max }
        }
        "Relu" => Op::Relu,
        "LeakyRelu" => Op::LeakyRelu { alpha: attr_float(n, "alpha", 0.01) },
        "Pad" => {
            let mode = attr(n, "mode").map(|a| String::from_utf8_lossy(&a.s).into_owned());
            if mode.as_deref().is_some_and(|m| m != "constant") {
                bail!("only constant padding is supported, not {mode:?}");
            }
            if n.input.get(3).is_some_and(|a| !a.is_empty()) {
                bail!("Pad with explicit axes is not supported");
            }
            let pads = match attr_ints(n, "pads") {
                Some(p) => p,
                None => {
                    let name = n.input.get(1).context("Pad has no pads")?;
                    Vec::<i64>::try_from(consts.get(name).context("Pad's pads must be constant")?)?
                }
            };
            if pads.len() % 2 != 0 || pads.iter().any(|&p| p < 0) {
                bail!("pads {pads:?}: expected begin and end pads, none negative");
            }
            // ONNX: every dimension's begin, then every end; torch: last dimension first,
            // begin then end, and only as many dimensions as are padded.
            let rank = pads.len() / 2;
            let mut torch_pads: Vec<i64> = (0..rank).rev().flat_map(|d| [pads[d], pads[d + rank]]).collect();
            while torch_pads.len() > 2 && torch_pads[torch_pads.len() - 2..] == [0, 0] {
                torch_pads.truncate(torch_pads.len() - 2);
            }
            let value = attr(n, "value").map(|a| a.f as f64).map_or_else(|| scalar(2, 0.0), Ok)?;
            Op::Pad { pads: torch_pads, value }
        }
        "Resize" => {
            let text = |name: &str, default: &str| {
                attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_else(|| default.into())
            };
            let (mode, coordinates) = (text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel"));
            if attr_int(n, "antialias", 0) != 0 {
                bail!("antialiased resizing is not supported");
            }
            if mode != "linear" || coordinates != "half_pixel" {
                bail!("only linear resizing with half_pixel coordinates is supported, not {mode} / {coordinates}");
            }
            let name = n.input.get(2).filter(|s| !s.is_empty()).context("Resize needs constant scales")?;
            let scales = Vec::<f32>::try_from(consts.get(name).context("Resize's scales must be constant")?)
                .ok()
                .filter(|s| s.len() == 4 && s[0] == 1.0 && s[1] == 1.0 && s[2] > 0.0 && s[3] > 0.0)
                .context("Resize's scales must be [1, 1, h, w] with h, w positive")?;
            Op::Resize { scales: [scales[2] as f64, scales[3] as f64] }
        }
        "Split" => {
            let name = n.input.get(1).filter(|s| !s.is_empty()).context("Split needs constant sizes")?;
            let sizes = Vec::<i64>::try_from(consts.get(name).context("Split's sizes must be constant")?)?;
            if sizes.len() != n.output.len() {
                bail!("{} sizes for {} outputs", sizes.len(), n.output.len());
            }
            Op::Split { axis: attr_int(n, "axis", 0), sizes }
        }
        "Transpose" => Op::Transpose { perm: attr_ints(n, "perm").context("Transpose without perm")? },
        "Sigmoid" => Op::Sigmoid,
        "HardSigmoid" => Op::HardSigmoid { alpha: attr_float(n, "alpha", 0.2), beta: attr_float(n, "beta", 0.5) },
        "HardSwish" => Op::HardSwish,
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "AveragePool" | "MaxPool" => {
            let (kernel, strides, pads) = kernel_attrs(n);
            // Padding a pool by hand would need -inf (max) or a changed divisor (average).
            if pads.len() == 4 && (pads[0] != pads[2] || pads[1] != pads[3]) {
                bail!("asymmetric pads {pads:?} on a pooling node are not supported");
            }
            if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
                bail!("dilated pooling is not supported");
            }
            let ceil_mode = attr_int(n, "ceil_mode", 0) != 0;
            if n.op_type == "MaxPool" {
                Op::MaxPool { kernel, strides, pads, ceil_mode }
            } else {
                let count_include_pad = attr_int(n, "count_include_pad", 0) != 0;
                Op::AveragePool { kernel, strides, pads, count_include_pad, ceil_mode }
            }
        }
        "BatchNormalization" => {
            if n.output.len() > 1 || attr_int(n, "training_mode", 0) != 0 {
                bail!("a BatchNormalization exported in training mode is not supported; export the model in eval mode");
            }
            let momentum = attr_float(n, "momentum", 0.9);
            if !(0.0..=1.0).contains(&momentum) {
                bail!("momentum {momentum} is outside 0–1");
            }
            Op::BatchNormalization { epsilon: attr_float(n, "epsilon", 1e-5), momentum: 1.0 - momentum }
        }
        "Flatten" => Op::Flatten { axis: attr_int(n, "axis", 1) },
        "Reshape" => Op::Reshape,
        "ReduceMean" => {
            let axes = match attr_ints(n, "axes") {
                Some(a) => a,
                None => match n.input.get(1) {
                    Some(name) => Vec::<i64>::try_from(consts.get(name).context("ReduceMean axes must be constant")?)?,
                    None => bail!("ReduceMean over all axes is not supported"),
                },
            };
            Op::ReduceMean { axes, keepdims: attr_int(n, "keepdims", 1) != 0 }
        }
        "Concat" => Op::Concat { axis: attr_int(n, "axis", 0) },
        "Identity" | "Dropout" => Op::PassThrough,
        "Constant" => Op::Constant,
        other => bail!("unsupported operator {other}"),
    })
}

fn value_shape(v: &pb::ValueInfoProto) -> Vec<i64> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => v,
                        _ => -1,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn tensor_from_proto(t: &pb::TensorProto) -> anyhow::Result<Tensor> {
    use pb::tensor_proto::DataType;
    // Values are either packed little-endian in raw_data or listed in the typed field.
    fn values<T: Clone, const N: usize>(raw: &[u8], listed: &[T], from_le: fn([u8; N]) -> T) -> Vec<T> {
        if raw.is_empty() {
            listed.to_vec()
        } else {
            raw.chunks_exact(N).map(|c| from_le(c.try_into().unwrap())).collect()
        }
    }
    let out = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => Tensor::from_slice(&values(&t.raw_data, &t.float_data, f32::from_le_bytes)),
        Ok(DataType::Int64) => Tensor::from_slice(&values(&t.raw_data, &t.int64_data, i64::from_le_bytes)),
        Ok(DataType::Int32) => {
            Tensor::from_slice(&values(&t.raw_data, &t.int32_data, i32::from_le_bytes)).to_kind(Kind::Int64)
        }
        _ => bail!("tensor \"{}\" has data type {}, which is not supported", t.name, t.data_type),
    };
    Ok(out.reshape(t.dims.as_slice()))
}

fn tensor_to_proto(name: &str, t: &Tensor) -> anyhow::Result<pb::TensorProto> {
    if t.kind() == Kind::Int64 {
        let values = Vec::<i64>::try_from(t.to_device(Device::Cpu).reshape([-1]))?;
        return Ok(pb::TensorProto {
            name: name.into(),
            dims: t.size(),
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let values = Vec::<f32>::try_from(t.reshape([-1]))?;
    Ok(pb::TensorProto {
        name: name.into(),
        dims: t.size(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    })
}
