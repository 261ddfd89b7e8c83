"""Import a BVH and a GLB into Blender (the bpy package) and report what Blender made of them.

Run with a Python that has bpy (tests/test_export_blender.py does):

    python tests/blender_import_check.py --bvh OUT.bvh --bvh-scale 0.01 --glb OUT.glb --fps 30 --out report.json

The report (JSON) has, for each file: the armature's bone names, the animation's first and last
Blender frame, and every bone head's world position (Blender's z-up world, metres) at every
animated frame: {"bvh": {...}, "glb": {"armatures": [...], "meshes": {...}, "assigned_actions": [...]}}.
"""

from __future__ import annotations

import argparse
import json

import bpy


def reset_scene(fps: float) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = max(1, round(fps))
    scene.render.fps_base = scene.render.fps / fps


def armature_report(armature) -> dict:
    action = armature.animation_data.action if armature.animation_data else None
    if action is None:
        raise SystemExit(f"armature {armature.name} has no animation")
    first, last = (int(round(v)) for v in action.frame_range)
    scene = bpy.context.scene
    positions = {}
    for frame in range(first, last + 1):
        scene.frame_set(frame)
        positions[frame] = {bone.name: list(armature.matrix_world @ bone.head) for bone in armature.pose.bones}
    return {"object": armature.name, "bones": [bone.name for bone in armature.pose.bones],
            "first_frame": first, "last_frame": last, "positions": positions}


def import_bvh(path: str, scale: float, fps: float) -> dict:
    reset_scene(fps)
    bpy.ops.import_anim.bvh(filepath=path, global_scale=scale, frame_start=0, use_fps_scale=False,
                            update_scene_fps=False, update_scene_duration=True, rotate_mode="NATIVE",
                            axis_forward="-Z", axis_up="Y")
    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    return armature_report(armatures[0])


def import_glb(path: str, fps: float) -> dict:
    reset_scene(fps)
    bpy.ops.import_scene.gltf(filepath=path)
    armatures = sorted((o for o in bpy.context.scene.objects if o.type == "ARMATURE"), key=lambda o: o.name)
    # Blender's importer makes only the file's first animation active; each other person's
    # action (named as their armature) is assigned here, as docs/CONSUMERS.md tells users to.
    assigned = []
    for armature in armatures:
        if armature.animation_data is None or armature.animation_data.action is None:
            armature.animation_data_create().action = bpy.data.actions[armature.name]
            assigned.append(armature.name)
    report = {"armatures": [armature_report(a) for a in armatures], "assigned_actions": assigned}
    report["meshes"] = {o.name: {"vertices": len(o.data.vertices), "faces": len(o.data.polygons),
                                 "vertex_groups": len(o.vertex_groups)}
                        for o in bpy.context.scene.objects if o.type == "MESH"}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bvh")
    parser.add_argument("--bvh-scale", type=float, default=0.01, help="metres per BVH unit")
    parser.add_argument("--glb")
    parser.add_argument("--fps", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report = {"blender": bpy.app.version_string}
    if args.bvh:
        report["bvh"] = import_bvh(args.bvh, args.bvh_scale, args.fps)
    if args.glb:
        report["glb"] = import_glb(args.glb, args.fps)
    with open(args.out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
