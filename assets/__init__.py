"""MJCF files of the chaosgym tasks, installed as `chaosgym.assets`."""
