//! schedule (work in progress)
