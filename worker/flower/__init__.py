"""Flower, started only behind a login: the entry point, the guard and a model of its options."""
