// Drives a Unity humanoid (a GameObject with an Animator and a Humanoid avatar, e.g. a VRM model)
// from meshstream's VMC stream. Needs VmcReceiver.cs in the project; docs/CONSUMERS.md has the set-up.
//
// The avatar must stand in its T-pose when the component is enabled (VRM models and most humanoid
// imports do): each bone's rest rotation is taken then, so avatars whose bones are not
// normalized (non-identity rest rotations) are driven correctly too. A bone the avatar lacks
// (often UpperChest) still passes its rotation on to its children.

using System.Collections.Generic;
using Meshstream.Vmc;
using UnityEngine;

[RequireComponent(typeof(Animator))]
public sealed class MeshstreamVmcAvatar : MonoBehaviour
{
    [Tooltip("UDP port to listen on (python -m stream.vmc SOURCE --to THIS_PC:PORT)")]
    public int port = 39539;

    [Tooltip("Also move the hips to where the person is: metres, with this object's origin standing for the camera, which looks along -Z")]
    public bool moveHips = false;

    // Unity's humanoid bones as meshstream sends them, each after its parent.
    static readonly HumanBodyBones[] Bones =
    {
        HumanBodyBones.Hips, HumanBodyBones.Spine, HumanBodyBones.Chest, HumanBodyBones.UpperChest,
        HumanBodyBones.Neck, HumanBodyBones.Head,
        HumanBodyBones.LeftShoulder, HumanBodyBones.LeftUpperArm, HumanBodyBones.LeftLowerArm, HumanBodyBones.LeftHand,
        HumanBodyBones.RightShoulder, HumanBodyBones.RightUpperArm, HumanBodyBones.RightLowerArm, HumanBodyBones.RightHand,
        HumanBodyBones.LeftUpperLeg, HumanBodyBones.LeftLowerLeg, HumanBodyBones.LeftFoot, HumanBodyBones.LeftToes,
        HumanBodyBones.RightUpperLeg, HumanBodyBones.RightLowerLeg, HumanBodyBones.RightFoot, HumanBodyBones.RightToes,
    };

    static readonly Dictionary<HumanBodyBones, HumanBodyBones> Parent = new Dictionary<HumanBodyBones, HumanBodyBones>
    {
        { HumanBodyBones.Spine, HumanBodyBones.Hips }, { HumanBodyBones.Chest, HumanBodyBones.Spine },
        { HumanBodyBones.UpperChest, HumanBodyBones.Chest }, { HumanBodyBones.Neck, HumanBodyBones.UpperChest },
        { HumanBodyBones.Head, HumanBodyBones.Neck },
        { HumanBodyBones.LeftShoulder, HumanBodyBones.UpperChest }, { HumanBodyBones.LeftUpperArm, HumanBodyBones.LeftShoulder },
        { HumanBodyBones.LeftLowerArm, HumanBodyBones.LeftUpperArm }, { HumanBodyBones.LeftHand, HumanBodyBones.LeftLowerArm },
        { HumanBodyBones.RightShoulder, HumanBodyBones.UpperChest }, { HumanBodyBones.RightUpperArm, HumanBodyBones.RightShoulder },
        { HumanBodyBones.RightLowerArm, HumanBodyBones.RightUpperArm }, { HumanBodyBones.RightHand, HumanBodyBones.RightLowerArm },
        { HumanBodyBones.LeftUpperLeg, HumanBodyBones.Hips }, { HumanBodyBones.LeftLowerLeg, HumanBodyBones.LeftUpperLeg },
        { HumanBodyBones.LeftFoot, HumanBodyBones.LeftLowerLeg }, { HumanBodyBones.LeftToes, HumanBodyBones.LeftFoot },
        { HumanBodyBones.RightUpperLeg, HumanBodyBones.Hips }, { HumanBodyBones.RightLowerLeg, HumanBodyBones.RightUpperLeg },
        { HumanBodyBones.RightFoot, HumanBodyBones.RightLowerLeg }, { HumanBodyBones.RightToes, HumanBodyBones.RightFoot },
    };

    readonly Dictionary<HumanBodyBones, Transform> boneTransforms = new Dictionary<HumanBodyBones, Transform>();
    readonly Dictionary<HumanBodyBones, Quaternion> restRotations = new Dictionary<HumanBodyBones, Quaternion>();
    readonly Dictionary<HumanBodyBones, Quaternion> sinceRest = new Dictionary<HumanBodyBones, Quaternion>();
    VmcReceiver receiver;

    void OnEnable()
    {
        var animator = GetComponent<Animator>();
        foreach (var bone in Bones)
        {
            var bound = animator.GetBoneTransform(bone);
            if (bound == null) continue;
            boneTransforms[bone] = bound;
            restRotations[bone] = Quaternion.Inverse(transform.rotation) * bound.rotation;  // T-pose, this object's axes
        }
        receiver = new VmcReceiver(port);
    }

    void OnDisable()
    {
        if (receiver != null) receiver.Dispose();
        receiver = null;
    }

    void LateUpdate()  // after the Animator, so the received pose wins
    {
        var frame = receiver != null ? receiver.Latest : null;
        if (frame == null || frame.TrackingStatus == 0) return;  // keep the last pose while nobody is seen
        foreach (var bone in Bones)
        {
            // The rotation since the T-pose: the parent's, then this bone's local one.
            var turn = bone == HumanBodyBones.Hips ? Quaternion.identity : sinceRest[Parent[bone]];
            VmcPose pose;
            if (frame.Bones.TryGetValue(bone.ToString(), out pose))
                turn = turn * new Quaternion(pose.Qx, pose.Qy, pose.Qz, pose.Qw);
            sinceRest[bone] = turn;
            Transform bound;
            if (boneTransforms.TryGetValue(bone, out bound))
                bound.rotation = transform.rotation * turn * restRotations[bone];
        }
        VmcPose hips;
        Transform hipsTransform;
        if (moveHips && frame.Bones.TryGetValue("Hips", out hips) && boneTransforms.TryGetValue(HumanBodyBones.Hips, out hipsTransform))
            hipsTransform.position = transform.TransformPoint(new Vector3(hips.Px, hips.Py, hips.Pz));
    }
}
