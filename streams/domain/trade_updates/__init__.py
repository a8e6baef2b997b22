"""Order feed domain core: normalise v1/v2 trade updates, attribute them to an account, and
shape them into the repository's rows. Pure: no I/O."""
