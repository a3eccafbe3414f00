//! The neural-network layer: the tape ([`Graph`], [`Var`], [`Gradients`]), the ops recorded
//! on it, modules and optimizers.

pub mod modules;
pub mod ops;
pub mod optim;
pub mod tape;
pub mod weight;

pub use tape::{Contributions, Gradients, Graph, Var};
