//! time (work in progress)
