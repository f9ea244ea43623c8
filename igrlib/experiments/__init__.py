"""One module per experiment of the paper: its settings per profile and the functions that turn
them into tidy tables for the chapters."""
