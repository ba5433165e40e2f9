"""The compute interface every provider implements, and its named errors."""
