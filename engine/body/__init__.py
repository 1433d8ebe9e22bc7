"""Body models: SMPL-format data (numpy), safe loading, and the project's mannequin."""
