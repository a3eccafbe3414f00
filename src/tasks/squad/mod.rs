//! Extractive question answering on SQuAD-format data: the JSON reader ([`data`]),
//! question-and-context windows with character offsets and answer positions ([`windows`]),
//! span decoding ([`postprocess`]) and the official metrics ([`metrics`]).

pub mod data;
pub mod metrics;
pub mod postprocess;
pub mod windows;
