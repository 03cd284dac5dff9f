# Without this file checkov loads no check from this directory, and says so only at INFO.
