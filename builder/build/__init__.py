"""The build and its outputs: the pipeline's steps, the wrapper's scripts, deployment targets, dist/."""
