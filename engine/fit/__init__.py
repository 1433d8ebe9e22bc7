"""Fitting BlazePose GHUM landmarks onto the SMPL-format rig (docs/landmark-fit.md).

correspondence.py  which of the 33 landmarks is which SMPL joint / surface vertex
prior.py           the learned pose prior (weights/pose_prior.npz) and soft joint limits
fit.py             shape, left/right swap repair, rotations, translation: ``fit_track``
"""
