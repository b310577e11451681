//! Codecs between each dialect and the canonical form (`crate::canonical`).
