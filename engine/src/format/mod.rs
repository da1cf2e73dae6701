//! Pure encoding and decoding of what the store holds on disk: the primitive codec, chunk
//! records, content-tree nodes, metadata records and segment frames. No I/O, no state.

pub mod chunk;
pub mod codec;
pub mod frame;
pub mod record;
pub mod tree;
pub mod values;
