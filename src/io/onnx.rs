//! ONNX model files: a graph of nodes with float32 initializers, inputs and outputs,
//! encoded as an ONNX `ModelProto` (IR version 7, the default operator set at version 13) by
//! the hand-written wire-format writer of [`protobuf`]. The field numbers are those of the
//! ONNX schema (`onnx/onnx.proto3`), named in [`field`]. [`encoder`] builds the graph of a
//! checkpoint's frozen image encoder.

pub mod encoder;
pub mod protobuf;

use crate::error::{Error, Result};
use protobuf::Message;

/// The ONNX IR version the files declare (7: opset 13 needs at least that).
pub const IR_VERSION: i64 = 7;
/// The version of the default (`ai.onnx`, domain `""`) operator set the nodes bind to.
pub const OPSET_VERSION: i64 = 13;
/// The model's `producer_name`.
pub const PRODUCER_NAME: &str = "selfsup";

/// The field numbers of the ONNX messages this writer fills (from `onnx.proto3`).
pub mod field {
    /// `ModelProto`.
    pub mod model {
        pub const IR_VERSION: u32 = 1;
        pub const PRODUCER_NAME: u32 = 2;
        pub const PRODUCER_VERSION: u32 = 3;
        pub const GRAPH: u32 = 7;
        pub const OPSET_IMPORT: u32 = 8;
    }
    /// `OperatorSetIdProto`.
    pub mod opset {
        pub const DOMAIN: u32 = 1;
        pub const VERSION: u32 = 2;
    }
    /// `GraphProto`.
    pub mod graph {
        pub const NODE: u32 = 1;
        pub const NAME: u32 = 2;
        pub const INITIALIZER: u32 = 5;
        pub const INPUT: u32 = 11;
        pub const OUTPUT: u32 = 12;
    }
    /// `NodeProto`.
    pub mod node {
        pub const INPUT: u32 = 1;
        pub const OUTPUT: u32 = 2;
        pub const NAME: u32 = 3;
        pub const OP_TYPE: u32 = 4;
        pub const ATTRIBUTE: u32 = 5;
    }
    /// `AttributeProto` and its `AttributeType` values.
    pub mod attribute {
        pub const NAME: u32 = 1;
        pub const I: u32 = 3;
        pub const INTS: u32 = 8;
        pub const TYPE: u32 = 20;
        /// `AttributeType.INT`.
        pub const TYPE_INT: u64 = 2;
        /// `AttributeType.INTS`.
        pub const TYPE_INTS: u64 = 7;
    }
    /// `TensorProto` and its `DataType.FLOAT`.
    pub mod tensor {
        pub const DIMS: u32 = 1;
        pub const DATA_TYPE: u32 = 2;
        pub const NAME: u32 = 8;
        pub const RAW_DATA: u32 = 9;
        /// `TensorProto.DataType.FLOAT` (float32).
        pub const FLOAT: u64 = 1;
    }
    /// `ValueInfoProto`.
    pub mod value_info {
        pub const NAME: u32 = 1;
        pub const TYPE: u32 = 2;
    }
    /// `TypeProto` (`tensor_type`) and `TypeProto.Tensor`.
    pub mod type_proto {
        pub const TENSOR_TYPE: u32 = 1;
        /// `TypeProto.Tensor.elem_type`.
        pub const ELEM_TYPE: u32 = 1;
        /// `TypeProto.Tensor.shape`.
        pub const SHAPE: u32 = 2;
    }
    /// `TensorShapeProto` and `TensorShapeProto.Dimension`.
    pub mod shape {
        pub const DIM: u32 = 1;
        /// `Dimension.dim_value`.
        pub const DIM_VALUE: u32 = 1;
        /// `Dimension.dim_param`.
        pub const DIM_PARAM: u32 = 2;
    }
}

/// One dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Value(usize),
    /// A symbolic size (`batch`), set by whoever runs the model.
    Param(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Value(v) => write!(f, "{v}"),
            Dim::Param(p) => f.write_str(p),
        }
    }
}

/// A float32 tensor input or output of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Vec<Dim>,
}

impl ValueInfo {
    /// The shape as text: `[batch, 3, 32, 32]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// A node attribute's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
}

/// One operator of the graph: its type (`Conv`, `Relu`, ...), a name unique in the graph,
/// the names of its inputs and outputs, and its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub op_type: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<(String, Attribute)>,
}

/// A constant float32 tensor of the graph (a weight), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// A graph being assembled: nodes in topological order (each node's inputs are graph
/// inputs, initializers or outputs of earlier nodes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnnxGraph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Initializer>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument {
        op: "onnx export",
        msg,
    }
}

impl OnnxGraph {
    /// An empty graph named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// Appends a node; returns its (first) output's name.
    pub fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<(&str, Attribute)>,
    ) -> String {
        self.nodes.push(Node {
            op_type: op_type.to_string(),
            name: name.to_string(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        });
        outputs.first().map_or_else(String::new, |s| s.to_string())
    }

    /// Adds a float32 constant of shape `dims`; returns its name.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data` does not hold `dims`' product of values.
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> Result<String> {
        let want: usize = dims.iter().product();
        if data.len() != want {
            return Err(invalid(format!(
                "initializer '{name}' of shape {dims:?} needs {want} values, got {}",
                data.len()
            )));
        }
        self.initializers.push(Initializer {
            name: name.to_string(),
            dims: dims.to_vec(),
            data,
        });
        Ok(name.to_string())
    }

    /// The number of weights (initializer values).
    pub fn parameter_count(&self) -> usize {
        self.initializers.iter().map(|t| t.data.len()).sum()
    }

    /// The `GraphProto`.
    pub fn encode(&self) -> Message {
        use field::graph as f;
        let mut g = Message::new();
        for n in &self.nodes {
            g.message(f::NODE, &encode_node(n));
        }
        g.string(f::NAME, &self.name);
        for t in &self.initializers {
            g.message(f::INITIALIZER, &encode_initializer(t));
        }
        for v in &self.inputs {
            g.message(f::INPUT, &encode_value_info(v));
        }
        for v in &self.outputs {
            g.message(f::OUTPUT, &encode_value_info(v));
        }
        g
    }

    /// The complete model file: a `ModelProto` of IR version [`IR_VERSION`] importing the
    /// default operator set at [`OPSET_VERSION`], produced by `selfsup` at the crate's
    /// version, holding this graph.
    pub fn to_model_bytes(&self) -> Vec<u8> {
        use field::model as f;
        let mut opset = Message::new();
        opset
            .string(field::opset::DOMAIN, "")
            .int64(field::opset::VERSION, OPSET_VERSION);
        let mut m = Message::new();
        m.int64(f::IR_VERSION, IR_VERSION)
            .string(f::PRODUCER_NAME, PRODUCER_NAME)
            .string(f::PRODUCER_VERSION, env!("CARGO_PKG_VERSION"))
            .message(f::GRAPH, &self.encode())
            .message(f::OPSET_IMPORT, &opset);
        m.into_bytes()
    }
}

fn to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn encode_node(n: &Node) -> Message {
    use field::node as f;
    let mut m = Message::new();
    for i in &n.inputs {
        m.string(f::INPUT, i);
    }
    for o in &n.outputs {
        m.string(f::OUTPUT, o);
    }
    m.string(f::NAME, &n.name).string(f::OP_TYPE, &n.op_type);
    for (name, value) in &n.attributes {
        m.message(f::ATTRIBUTE, &encode_attribute(name, value));
    }
    m
}

fn encode_attribute(name: &str, value: &Attribute) -> Message {
    use field::attribute as f;
    let mut m = Message::new();
    m.string(f::NAME, name);
    match value {
        Attribute::Int(i) => {
            m.int64(f::I, *i).uint64(f::TYPE, f::TYPE_INT);
        }
        Attribute::Ints(v) => {
            for &i in v {
                m.int64(f::INTS, i);
            }
            m.uint64(f::TYPE, f::TYPE_INTS);
        }
    }
    m
}

fn encode_initializer(t: &Initializer) -> Message {
    use field::tensor as f;
    let mut m = Message::new();
    for &d in &t.dims {
        m.int64(f::DIMS, to_i64(d));
    }
    m.uint64(f::DATA_TYPE, f::FLOAT).string(f::NAME, &t.name);
    let raw: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    m.bytes(f::RAW_DATA, &raw);
    m
}

fn encode_value_info(v: &ValueInfo) -> Message {
    let mut shape = Message::new();
    for d in &v.dims {
        let mut dim = Message::new();
        match d {
            Dim::Value(n) => dim.int64(field::shape::DIM_VALUE, to_i64(*n)),
            Dim::Param(p) => dim.string(field::shape::DIM_PARAM, p),
        };
        shape.message(field::shape::DIM, &dim);
    }
    let mut tensor = Message::new();
    tensor
        .uint64(field::type_proto::ELEM_TYPE, field::tensor::FLOAT)
        .message(field::type_proto::SHAPE, &shape);
    let mut ty = Message::new();
    ty.message(field::type_proto::TENSOR_TYPE, &tensor);
    let mut m = Message::new();
    m.string(field::value_info::NAME, &v.name)
        .message(field::value_info::TYPE, &ty);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_info_encodes_with_the_schema_field_numbers() {
        let v = ValueInfo {
            name: "x".into(),
            dims: vec![Dim::Param("n".into()), Dim::Value(3)],
        };
        // ValueInfoProto { name (1) = "x", type (2) = TypeProto { tensor_type (1) =
        //   Tensor { elem_type (1) = 1, shape (2) = TensorShapeProto {
        //     dim (1) = { dim_param (2) = "n" }, dim (1) = { dim_value (1) = 3 } } } } }
        let dims = [0x0a, 0x03, 0x12, 0x01, b'n', 0x0a, 0x02, 0x08, 0x03];
        let mut tensor = vec![0x08, 0x01, 0x12, dims.len() as u8];
        tensor.extend(dims);
        let mut ty = vec![0x0a, tensor.len() as u8];
        ty.extend(tensor);
        let mut want = vec![0x0a, 0x01, b'x', 0x12, ty.len() as u8];
        want.extend(ty);
        assert_eq!(encode_value_info(&v).into_bytes(), want);
        assert_eq!(v.shape_text(), "[n, 3]");
    }

    #[test]
    fn an_initializer_is_float_raw_data_little_endian() {
        let mut g = OnnxGraph::new("g");
        assert!(g.initializer("w", &[2, 2], vec![1.0; 3]).is_err());
        g.initializer("w", &[1, 2], vec![1.0, -2.0]).unwrap();
        // dims (1) = 1, dims (1) = 2, data_type (2) = FLOAT (1), name (8) = "w",
        // raw_data (9) = 1.0f32 (00 00 80 3f) then -2.0f32 (00 00 00 c0).
        let want = [
            0x08, 0x01, 0x08, 0x02, 0x10, 0x01, 0x42, 0x01, b'w', 0x4a, 0x08, 0x00, 0x00, 0x80,
            0x3f, 0x00, 0x00, 0x00, 0xc0,
        ];
        assert_eq!(encode_initializer(&g.initializers[0]).into_bytes(), want);
        assert_eq!(g.parameter_count(), 2);
    }

    #[test]
    fn a_node_with_int_and_ints_attributes() {
        let mut g = OnnxGraph::new("g");
        let out = g.node(
            "Flatten",
            "f",
            &["a"],
            &["b"],
            vec![
                ("axis", Attribute::Int(1)),
                ("p", Attribute::Ints(vec![0, 2])),
            ],
        );
        assert_eq!(out, "b");
        // input (1) "a", output (2) "b", name (3) "f", op_type (4) "Flatten",
        // attribute (5) { name (1) "axis", i (3) 1, type (20: key a0 01) INT (2) },
        // attribute (5) { name (1) "p", ints (8) 0, ints (8) 2, type INTS (7) }.
        let mut want = vec![
            0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x1a, 0x01, b'f', 0x22, 0x07,
        ];
        want.extend(b"Flatten");
        want.extend([0x2a, 0x0b, 0x0a, 0x04]);
        want.extend(b"axis");
        want.extend([0x18, 0x01, 0xa0, 0x01, 0x02]);
        want.extend([
            0x2a, 0x0a, 0x0a, 0x01, b'p', 0x40, 0x00, 0x40, 0x02, 0xa0, 0x01, 0x07,
        ]);
        assert_eq!(encode_node(&g.nodes[0]).into_bytes(), want);
    }

    #[test]
    fn the_model_header_names_ir_version_producer_and_opset() {
        let bytes = OnnxGraph::new("g").to_model_bytes();
        // ir_version (1) = 7, producer_name (2) = "selfsup", producer_version (3).
        let mut want = vec![0x08, 0x07, 0x12, 0x07];
        want.extend(b"selfsup");
        let v = env!("CARGO_PKG_VERSION");
        want.extend([0x1a, v.len() as u8]);
        want.extend(v.as_bytes());
        // graph (7) = GraphProto { name (2) = "g" }.
        want.extend([0x3a, 0x03, 0x12, 0x01, b'g']);
        // opset_import (8) = { domain (1) = "", version (2) = 13 }.
        want.extend([0x42, 0x04, 0x0a, 0x00, 0x10, 0x0d]);
        assert_eq!(bytes, want);
    }
}
