//! gradient (work in progress)
