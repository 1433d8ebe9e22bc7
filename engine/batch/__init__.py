"""``python -m engine batch``: a list of shots run as tasks on Ray (engine/batch/cli.py).

Runtime modules, by job:

* ``shots``   -- which shots: a folder, a glob or a text/CSV list -> ``Shot`` (name, video, range);
* ``record``  -- what a finished step wrote and was made from (``<shot>/shot.json``), checked on
  a rerun; the batch manifest (JSON + CSV);
* ``shot``    -- one shot's steps as child processes (engine run, mattes, the headless Blender
  job), no Ray: a task body that can be run and tested on its own;
* ``cluster`` -- Ray: local or an existing cluster, one task per shot, retries, progress, cancel;
* ``cli``     -- the command line.

Only ``cluster`` imports Ray (an optional dependency: ``python3 build.py setup --extras batch``).
"""
