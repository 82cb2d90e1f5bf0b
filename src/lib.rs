//! Root package: hosts examples/ and tests/.
