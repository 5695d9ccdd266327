"""The faces of a task that other libraries expect: Gymnasium's single and vector environments
(`gym_env`, on MJX or on MuJoCo's C engine, `mujoco_backend`). They convert at the boundary and
add no physics of their own."""
