//! Nothing here: the tests in `tests/` check the repository as a whole (the workspace README's
//! examples), which belongs to no published package.
