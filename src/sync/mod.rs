//! sync (work in progress)
