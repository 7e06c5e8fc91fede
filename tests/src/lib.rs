//! Cross-process and cross-language tests live in `tests/`.
