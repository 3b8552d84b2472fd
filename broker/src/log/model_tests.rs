//! Model-based tests (added next).
