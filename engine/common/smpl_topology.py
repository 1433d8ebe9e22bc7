"""SMPL topology facts shared by the engine and the Blender extension (numpy only).

Everything here is a fact about SMPL's vertex numbering and kinematic tree, not
model data: joint names, parents, the smplx landmark vertices, the 49-joint set of
SPIN/PyMAF and the 431 vertices PyMAF samples features at. Any SMPL-format body
model (the user's SMPL, or the project's own mannequin) shares them.
"""
import numpy as np

NUM_VERTICES = 6890
NUM_FACES = 13776
NUM_JOINTS = 24
NUM_BETAS = 10
NUM_POSE_BASIS = 207  # 23 joints x 9 entries of (R - I)

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21],
    dtype=np.int64,
)

# smplx's default vertex joints (VERTEX_IDS['smplh']), in the order smplx appends them
# after the 24 kinematic joints (joint indices 24..44).
VERTEX_JOINTS = (
    ("nose", 332), ("reye", 6260), ("leye", 2800), ("rear", 4071), ("lear", 583),
    ("LBigToe", 3216), ("LSmallToe", 3226), ("LHeel", 3387),
    ("RBigToe", 6617), ("RSmallToe", 6624), ("RHeel", 6787),
    ("lthumb", 2746), ("lindex", 2319), ("lmiddle", 2445), ("lring", 2556), ("lpinky", 2673),
    ("rthumb", 6191), ("rindex", 5782), ("rmiddle", 5905), ("rring", 6016), ("rpinky", 6133),
)
VERTEX_JOINT_NAMES = tuple(n for n, _ in VERTEX_JOINTS)
VERTEX_JOINT_IDS = np.array([i for _, i in VERTEX_JOINTS], dtype=np.int64)

# Rows of SPIN's J_regressor_extra [9, 6890]: joint indices 45..53 of the 54-set.
EXTRA_JOINT_NAMES = (
    "R hip", "L hip", "Neck (LSP)", "Head-top (LSP)", "Pelvis (MPII)",
    "Thorax (MPII)", "Spine (H36M)", "Jaw (H36M)", "Head (H36M)",
)
NUM_JOINTS_54 = NUM_JOINTS + len(VERTEX_JOINTS) + len(EXTRA_JOINT_NAMES)

# The 49 output joints of SPIN/PyMAF (constants.JOINT_MAP): 25 OpenPose BODY_25 joints,
# then SPIN's 24 "ground truth" joints. JOINTS_49_SOURCE[k] is the index in the 54-set.
JOINT_NAMES_49 = (
    "OP Nose", "OP Neck", "OP RShoulder", "OP RElbow", "OP RWrist", "OP LShoulder",
    "OP LElbow", "OP LWrist", "OP MidHip", "OP RHip", "OP RKnee", "OP RAnkle", "OP LHip",
    "OP LKnee", "OP LAnkle", "OP REye", "OP LEye", "OP REar", "OP LEar", "OP LBigToe",
    "OP LSmallToe", "OP LHeel", "OP RBigToe", "OP RSmallToe", "OP RHeel",
    "R ankle", "R knee", "R hip", "L hip", "L knee", "L ankle", "R wrist", "R elbow",
    "R shoulder", "L shoulder", "L elbow", "L wrist", "Neck (LSP)", "Head-top (LSP)",
    "Pelvis (MPII)", "Thorax (MPII)", "Spine (H36M)", "Jaw (H36M)", "Head (H36M)",
    "Nose", "L eye", "R eye", "L ear", "R ear",
)
JOINTS_49_SOURCE = np.array([
    24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
    8, 5, 45, 46, 4, 7, 21, 19, 17, 16, 18, 20, 47, 48, 49, 50, 51, 52, 53, 24, 26, 25, 28, 27,
], dtype=np.int64)

# The 431 SMPL vertices PyMAF samples mesh-aligned features at (row-wise argmax of the
# checkpoint's Dmap, from GraphCMR's mesh_downsampling.npz). Ascending.
MAF_VERTEX_IDS = np.array([
    5, 24, 83, 110, 129, 134, 143, 153, 162, 170, 175, 177, 181, 195, 208, 215,
    254, 256, 258, 264, 269, 274, 300, 302, 331, 333, 362, 366, 372, 390, 408, 412,
    416, 433, 444, 457, 482, 494, 506, 600, 605, 612, 619, 659, 674, 679, 704, 733,
    739, 743, 785, 789, 800, 802, 811, 815, 816, 853, 867, 869, 874, 881, 884, 888,
    900, 901, 907, 912, 928, 938, 957, 962, 963, 991, 1006, 1007, 1014, 1020, 1022, 1046,
    1049, 1052, 1056, 1061, 1080, 1089, 1092, 1096, 1116, 1134, 1145, 1149, 1154, 1162, 1183, 1189,
    1209, 1228, 1237, 1259, 1263, 1269, 1271, 1276, 1279, 1293, 1336, 1348, 1361, 1363, 1410, 1420,
    1427, 1435, 1438, 1464, 1477, 1500, 1539, 1560, 1577, 1600, 1613, 1646, 1664, 1682, 1689, 1704,
    1706, 1724, 1733, 1738, 1758, 1771, 1787, 1807, 1815, 1846, 1863, 1870, 1925, 1945, 1989, 2012,
    2033, 2043, 2072, 2093, 2103, 2105, 2115, 2189, 2241, 2246, 2262, 2270, 2274, 2276, 2278, 2290,
    2308, 2328, 2435, 2465, 2540, 2551, 2608, 2679, 2729, 2744, 2784, 2835, 2848, 2870, 2892, 2925,
    2931, 2936, 2971, 2979, 3003, 3010, 3018, 3022, 3024, 3028, 3041, 3042, 3082, 3102, 3106, 3107,
    3117, 3119, 3127, 3131, 3164, 3185, 3190, 3192, 3200, 3210, 3214, 3217, 3222, 3225, 3228, 3242,
    3303, 3312, 3317, 3324, 3326, 3338, 3341, 3348, 3350, 3353, 3373, 3379, 3381, 3385, 3386, 3403,
    3424, 3427, 3429, 3432, 3472, 3474, 3499, 3523, 3536, 3615, 3653, 3671, 3676, 3681, 3683, 3687,
    3695, 3697, 3720, 3746, 3749, 3761, 3762, 3764, 3796, 3813, 3866, 3870, 3892, 3902, 3920, 3979,
    4006, 4055, 4088, 4091, 4094, 4107, 4126, 4149, 4158, 4162, 4164, 4194, 4228, 4229, 4256, 4275,
    4289, 4290, 4353, 4361, 4365, 4370, 4378, 4384, 4398, 4411, 4415, 4421, 4424, 4426, 4440, 4443,
    4450, 4457, 4477, 4478, 4490, 4493, 4502, 4504, 4523, 4530, 4532, 4535, 4539, 4542, 4558, 4567,
    4573, 4578, 4581, 4635, 4657, 4710, 4712, 4713, 4745, 4754, 4759, 4762, 4791, 4792, 4798, 4894,
    4900, 4912, 4937, 4942, 4946, 4950, 4972, 4973, 4976, 4994, 5009, 5026, 5031, 5034, 5045, 5075,
    5082, 5129, 5134, 5162, 5200, 5211, 5221, 5236, 5249, 5253, 5256, 5290, 5295, 5308, 5323, 5332,
    5345, 5439, 5452, 5460, 5474, 5518, 5565, 5567, 5572, 5574, 5609, 5622, 5639, 5652, 5655, 5690,
    5702, 5723, 5748, 5752, 5780, 5786, 5898, 5907, 6002, 6034, 6056, 6132, 6141, 6190, 6223, 6245,
    6249, 6296, 6381, 6387, 6426, 6442, 6460, 6481, 6489, 6499, 6507, 6511, 6529, 6532, 6539, 6549,
    6575, 6586, 6590, 6603, 6612, 6616, 6617, 6620, 6630, 6642, 6703, 6712, 6717, 6719, 6726, 6728,
    6736, 6738, 6747, 6753, 6757, 6781, 6783, 6787, 6789, 6794, 6802, 6803, 6821, 6829, 6871,], dtype=np.int64)
NUM_MAF_VERTICES = 431

assert len(JOINT_NAMES_49) == len(JOINTS_49_SOURCE) == 49
assert len(MAF_VERTEX_IDS) == NUM_MAF_VERTICES and np.all(np.diff(MAF_VERTEX_IDS) > 0)
