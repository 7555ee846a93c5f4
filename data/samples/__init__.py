"""Small built-in data sets the demo and the tests use, built or written by this project."""
