//! connector (work in progress)
