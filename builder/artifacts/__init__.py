"""The build and what it makes: the pipeline's steps, the wrapper's scripts, deployment targets, dist/."""
