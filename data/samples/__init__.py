"""Small built-in data sets the demo and the tests use, built or written by this project."""

# What a source or an inbox setting says to use these sets instead of the user's own data.
BUILTIN_SAMPLE = "builtin:sample"
